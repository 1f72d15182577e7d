"""Spike and operation counters, by forward hooks (for every chapter's "cost" column and the
energy model).

Per synaptic layer (``nn.Linear``, ``nn.Conv2d``), over everything that passed through it:

- ``macs`` — multiply-accumulates of the dense layer (what an ANN of the same shape does);
- ``sops`` — synaptic operations (accumulates) when the input is binary spikes: one per
  non-zero input per outgoing connection it reaches, counted exactly (for a convolution,
  the non-zeros in each output's receptive field times the output channels), ``None`` when
  the input is not binary (a directly-coded first layer does MACs);
- ``input_density`` — fraction of non-zero inputs.

With ``skip_zero_weights=True`` a SOP is counted only where the connection's weight is
non-zero: the *active operations* of a pruned network (ADMM compression chapter), which
skips pruned synapses. For dense weights both counts agree.

Per spiking layer (:class:`~compendium.spiking.neuron.LIF` in multi-step mode): spikes,
neurons, time steps, firing rate (spikes per neuron per step) and spikes per neuron per
sample. Totals are divided by the number of samples given to :meth:`OpCounter.summary`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compendium.spiking.neuron import LIF


@dataclass
class LayerOps:
    name: str
    kind: str
    macs: float = 0.0
    sops: float | None = 0.0
    inputs: float = 0.0
    nonzero_inputs: float = 0.0


@dataclass
class LayerSpikes:
    name: str
    spikes: float = 0.0
    neuron_steps: float = 0.0  # neurons x time steps x samples seen
    neurons: int = 0
    steps: int = 0


def _is_binary(x: Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


def conv2d_sops(x: Tensor, conv: nn.Conv2d, skip_zero_weights: bool = False) -> float:
    """Exact accumulates for binary input ``x [N, C, H, W]`` through ``conv`` (only through
    non-zero weights with ``skip_zero_weights``)."""
    nz = (x != 0).to(x.dtype)
    g = conv.groups
    if skip_zero_weights:
        mask = (conv.weight.detach() != 0).to(x.dtype)
        return float(F.conv2d(nz, mask, stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=g).sum())
    ones = torch.ones(g, conv.in_channels // g, *conv.kernel_size, dtype=x.dtype, device=x.device)
    per_group = F.conv2d(nz, ones, stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=g)
    return float(per_group.sum()) * (conv.out_channels // g)


def linear_sops(x: Tensor, linear: nn.Linear, skip_zero_weights: bool = False) -> float:
    """Accumulates for binary input ``x [..., in]`` through ``linear``."""
    nz = (x != 0).to(x.dtype)
    if skip_zero_weights:
        return float((nz.reshape(-1, nz.shape[-1]) @ (linear.weight.detach() != 0).to(x.dtype).T).sum())
    return float(nz.sum()) * linear.out_features


class OpCounter:
    """Context manager that counts operations and spikes of ``model`` while it runs."""

    def __init__(self, model: nn.Module, skip_zero_weights: bool = False):
        self.model = model
        self.skip_zero_weights = skip_zero_weights
        self.ops: "OrderedDict[str, LayerOps]" = OrderedDict()
        self.spikes: "OrderedDict[str, LayerSpikes]" = OrderedDict()
        self._handles: list = []

    def __enter__(self) -> "OpCounter":
        for name, m in self.model.named_modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                self.ops[name] = LayerOps(name, type(m).__name__)
                self._handles.append(m.register_forward_hook(self._synapse_hook(name)))
            elif isinstance(m, LIF) and m.step_mode == "multi":
                self.spikes[name] = LayerSpikes(name)
                self._handles.append(m.register_forward_hook(self._spike_hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _synapse_hook(self, name: str):
        def hook(mod: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
            x = inputs[0].detach()
            rec = self.ops[name]
            if isinstance(mod, nn.Linear):
                rec.macs += out.numel() * mod.in_features
                sops = linear_sops(x, mod, self.skip_zero_weights)
            else:
                rec.macs += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
                sops = conv2d_sops(x, mod, self.skip_zero_weights)
            rec.inputs += x.numel()
            rec.nonzero_inputs += float((x != 0).sum())
            if rec.sops is not None:
                rec.sops = rec.sops + sops if _is_binary(x) else None
        return hook

    def _spike_hook(self, name: str):
        def hook(mod: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
            rec = self.spikes[name]
            rec.spikes += float(out.detach().sum())
            rec.neuron_steps += out.numel()
            rec.steps = out.shape[0]
            rec.neurons = out[0, 0].numel()
        return hook

    def summary(self, n_samples: int):
        """Per-layer table (pandas DataFrame), normalised per sample."""
        import pandas as pd

        if n_samples < 1:
            raise ValueError("n_samples must be >= 1")
        rows = []
        for r in self.ops.values():
            rows.append({"layer": r.name, "kind": r.kind, "dense MACs/sample (all steps)": r.macs / n_samples,
                         "SOPs/sample": None if r.sops is None else r.sops / n_samples,
                         "input density": r.nonzero_inputs / r.inputs if r.inputs else float("nan")})
        ops = pd.DataFrame(rows)
        srows = []
        for r in self.spikes.values():
            rate = r.spikes / r.neuron_steps if r.neuron_steps else float("nan")
            srows.append({"layer": r.name, "neurons": r.neurons, "T": r.steps, "firing rate": rate,
                          "spikes/neuron/sample": rate * r.steps})
        return ops, pd.DataFrame(srows)

    def totals(self, n_samples: int, time_steps: int = 1) -> dict[str, float]:
        """Per sample: ``ann_macs`` — the MACs of one pass of the same network as an ANN (the
        counted dense MACs divided by ``time_steps``, since a multi-step SNN runs its layers on
        every step); ``snn_sops`` — accumulates on binary inputs over all steps; ``snn_macs`` —
        MACs on non-binary inputs over all steps (what the SNN must still multiply); and the
        mean spikes per neuron."""
        if time_steps < 1:
            raise ValueError("time_steps must be >= 1")
        macs = sum(r.macs for r in self.ops.values()) / n_samples / time_steps
        sops = sum(r.sops for r in self.ops.values() if r.sops is not None) / n_samples
        snn_macs = sum(r.macs for r in self.ops.values() if r.sops is None) / n_samples
        n_spk = sum(r.spikes for r in self.spikes.values())
        n_neurons = sum(r.neurons for r in self.spikes.values())
        return {"ann_macs": macs, "snn_sops": sops, "snn_macs": snn_macs,
                "spikes_per_neuron": n_spk / n_samples / n_neurons if n_neurons else float("nan")}
