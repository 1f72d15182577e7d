"""Device models: the three-terminal memristive synapse with concomitant STP and LTP, and the
sleep–wake circuit built from it."""
