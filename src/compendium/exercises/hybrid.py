"""The hybrid chapter's checked exercises (see :mod:`compendium.exercises`); its notebook imports
``check`` from here, so only this chapter depends on these reference solutions."""

from __future__ import annotations

from compendium.exercises import check, register

__all__ = ["check"]


def _hybrid_trace(mode: str = "lp") -> float:
    import torch

    from compendium.plasticity.hybrid import PlasticLIF

    layer = PlasticLIF(1, 1, mode=mode)
    with torch.no_grad():
        layer.linear.weight.fill_(1.0)
        layer.linear.bias.zero_()
        layer(torch.ones(3, 1, 1))
    return float(layer.trace[0, 0])


register("hybrid", 1, "The Hebbian trace of one synapse", _hybrid_trace,
         "Build `PlasticLIF(1, 1, mode='lp')`, set `layer.linear.weight` to 1 and the bias to 0 (under "
         "`torch.no_grad()`), feed `torch.ones(3, 1, 1)` ([T, B, in]) and read `layer.trace` afterwards: each step "
         "adds β·x·tanh(u/θ − η) after decaying the trace by λ.",
         "import torch\nfrom compendium.plasticity.hybrid import PlasticLIF\n\n"
         "layer = PlasticLIF(1, 1, mode='lp')\n# set the weight to 1, the bias to 0, run three steps of input 1\n"
         "answer = ...  # the trace P after the call (a float)",
         rel=1e-3,
         mistakes=((lambda: 0.0, "A zero trace: the 'gp' mode has no local plasticity, or the forward call did not run; "
                    "use mode='lp' and read `layer.trace` after calling the layer."),))
