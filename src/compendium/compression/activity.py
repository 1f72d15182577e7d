"""Activity regularisation: a penalty on spike counts (Deng, Wu et al., arXiv 1911.00822, §III-C).

    L = L_task + λ · r,    r = mean over spiking layers of the spikes per neuron per step

trades accuracy for fewer spike events, hence fewer synaptic operations. The paper's exact
regulariser and its λ values could not be read ([U]); this is the natural form, stated as ours.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from compendium.spiking.neuron import LIF


class SpikeActivity:
    """Collects the firing rate of every multi-step LIF layer on each forward pass.

    ``with SpikeActivity(model) as act: loss = task + lam * act.penalty()`` — :meth:`penalty`
    returns the mean rate of the forward passes since the last call (differentiable: the
    spikes carry surrogate gradients) and clears the buffer."""

    def __init__(self, model: nn.Module):
        self.model = model
        self._rates: list[Tensor] = []
        self._handles: list = []

    def __enter__(self) -> "SpikeActivity":
        for m in self.model.modules():
            if isinstance(m, LIF) and m.step_mode == "multi":
                self._handles.append(m.register_forward_hook(lambda mod, inp, out: self._rates.append(out.mean())))
        if not self._handles:
            raise ValueError("the model has no multi-step LIF layer to regularise")
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._rates.clear()

    def penalty(self) -> Tensor:
        if not self._rates:
            raise RuntimeError("no forward pass since the last penalty() call")
        r = torch.stack(self._rates).mean()
        self._rates.clear()
        return r
