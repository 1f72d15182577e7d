"""The adversarial chapter's checked exercises (see :mod:`compendium.exercises`); its notebook imports
``check`` from here, so only this chapter depends on these reference solutions."""

from __future__ import annotations

from compendium.exercises import check, register

__all__ = ["check"]


def _adversarial_rsf(p: float = 0.2, gamma: float = 0.1) -> float:
    # expectation of S xor Bernoulli(gamma) for S ~ Bernoulli(p); a simulation with
    # compendium.attacks.spike.rsf lands within the tolerance
    return p * (1 - gamma) + (1 - p) * gamma


register("adversarial", 1, "What random spike flipping does to the firing rate", _adversarial_rsf,
         "RSF flips every bit with probability γ: ones become zeros with probability γ and zeros become ones with "
         "probability γ. Simulate it with `compendium.attacks.spike.rsf` on a large Bernoulli(0.2) tensor, or work "
         "out the expectation.",
         "import torch\nfrom compendium.attacks.spike import rsf\n\n"
         "g = torch.Generator().manual_seed(0)\nspikes = torch.bernoulli(torch.full((8, 1000, 100), 0.2), generator=g)\n"
         "answer = ...  # the fraction of ones after rsf(spikes, gamma=0.1) (a float)",
         abs=0.01,
         mistakes=((lambda: 0.18, "0.18 only removes spikes: RSF also turns silent bits (80 % of them) into spikes."),
                   (lambda: 0.3, "0.3 adds γ to every bit: only the silent ones gain spikes, and the firing ones lose some.")))
