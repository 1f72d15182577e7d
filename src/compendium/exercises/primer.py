"""The primer chapter's checked exercises (see :mod:`compendium.exercises`); its notebook imports
``check`` from here, so only this chapter depends on these reference solutions."""

from __future__ import annotations

from compendium.exercises import check, register

__all__ = ["check"]


def _primer_spikes(reset: str = "zero", decay: float = 0.9) -> int:
    import torch

    from compendium.spiking import lif_sequence

    spikes, _ = lif_sequence(torch.full((50, 1), 0.25), decay, 1.0, reset)
    return int(spikes.sum())


register("primer", 1, "Count the spikes of one LIF neuron", _primer_spikes,
         "Drive one neuron for 50 steps: `lif_sequence(torch.full((50, 1), 0.25), decay, threshold, reset)` "
         "returns (spikes, membrane); sum the spikes. Use k = 0.9, V_th = 1.0 and the hard reset ('zero').",
         "import torch\nfrom compendium.spiking import lif_sequence\n\n"
         "# 50 steps of a constant current 0.25 into one neuron with k = 0.9, V_th = 1.0, hard reset\n"
         "answer = ...  # the number of spikes (an int)",
         mistakes=((lambda: _primer_spikes("subtract"), "That is the soft reset's count: the exercise asks for the "
                    "hard reset (reset='zero'), which restarts the membrane from 0 after each spike."),
                   (lambda: _primer_spikes(decay=0.5), "That is the count with the chapter's decay k = 0.5; "
                    "the exercise uses k = 0.9.")))
