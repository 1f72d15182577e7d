"""Characterise BPTT training of a spiking network: the sparsity that an accelerator can use.

For each synaptic layer ``n`` (``Linear`` inside a :class:`~compendium.spiking.layers.SeqFold`,
followed by a multi-step LIF), one training step gives, per time step and sample:

- ``o^{n-1}`` — its input spikes (forward *spike density*);
- ``h(u^n)`` — the surrogate derivative at its neurons (*surrogate density*: the fraction
  non-zero; a rectangular surrogate is zero outside its window);
- ``δu^n = ∂L/∂I^n`` — the gradient at its input current (*gradient density*).

and the operations of the three passes, dense and as sparsity permits (``in``/``out`` the
layer's widths; sums over time steps and samples)::

    forward          dense MACs  T·B·in·out        spike-driven ACs  Σ nnz(o^{n-1})·out
    backward (∂o)    dense MACs  T·B·in·out        dual-sparse MACs  Σ nnz(δu^n)·nnz(h(u^{n-1}))
    weight update    dense MACs  T·B·in·out        spike-driven ACs  Σ nnz(δu^n)·nnz(o^{n-1})

A non-spiking readout ``Linear`` (no LIF after it) is characterised too, as the last layer:
``h ≡ 1`` at its outputs, ``δy`` the loss's gradient there (:func:`_readout_workload`).

(The backward "output sparsity" — only inputs whose own surrogate is non-zero need a
gradient — assumes the reset path is detached; with it attached, the count is an underestimate.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from compendium.spiking.layers import SeqFold
from compendium.spiking.neuron import LIF


@dataclass
class LayerWorkload:
    name: str
    fan_in: int
    fan_out: int
    T: int
    batch: int
    spike_density: float  # of the layer's input
    surrogate_density: float  # of its neurons' h(u)
    grad_density: float  # of δu at its neurons
    ops: dict[str, float] = field(default_factory=dict)  # totals over T and the batch
    per_step: dict[str, list[float]] = field(default_factory=dict)


def _readout_linear(model: nn.Module) -> tuple[str, nn.Linear] | None:
    """The network's last ``Linear`` (inside a :class:`SeqFold`) when no LIF follows it: a
    non-spiking readout (e.g. ``readout="current"``), which is trained like every other layer."""
    mods = list(model.named_modules())
    for i in range(len(mods) - 1, -1, -1):
        name, m = mods[i]
        if isinstance(m, SeqFold):
            lin = [x for x in m.modules() if isinstance(x, nn.Linear)]
            if not lin:
                continue
            if any(isinstance(x, LIF) for _, x in mods[i + 1:]):
                return None
            return name, lin[-1]
    return None


def _linear_lif_pairs(model: nn.Module) -> list[tuple[str, nn.Linear, LIF]]:
    mods = list(model.named_modules())
    pairs = []
    for i, (name, m) in enumerate(mods):
        if isinstance(m, SeqFold):
            lin = [x for x in m.modules() if isinstance(x, nn.Linear)]
            nxt = next((x for _, x in mods[i + 1:] if isinstance(x, (LIF, SeqFold))), None)
            if lin and isinstance(nxt, LIF):
                pairs.append((name, lin[-1], nxt))
    return pairs


def characterise(model: nn.Module, x: Tensor, y: Tensor, loss_fn=nn.functional.cross_entropy) -> list[LayerWorkload]:
    """One forward/backward pass of ``model`` on ``(x, y)``; the workload of every Linear→LIF layer.

    The model's LIF neurons must use a surrogate with a window (e.g. rectangular) for the
    surrogate density to be meaningful; membranes are recorded for the duration of the call."""
    pairs = _linear_lif_pairs(model)
    if not pairs:
        raise ValueError("no Linear→LIF layers found (wrap Linear layers in SeqFold and follow them by a LIF)")
    inputs: dict[str, Tensor] = {}
    currents: dict[str, Tensor] = {}
    handles, saved_flags = [], []
    for name, lin, lif in pairs:
        saved_flags.append((lif, lif.record_mem))
        lif.record_mem = True
        handles.append(lin.register_forward_hook(lambda m, inp, out, name=name: inputs.__setitem__(name, inp[0].detach())))

        def keep_current(m, inp, out, name=name):
            cur = inp[0]
            if cur.requires_grad:
                cur.retain_grad()
            currents[name] = cur

        handles.append(lif.register_forward_hook(keep_current))
    readout = _readout_linear(model)
    if readout is not None:
        def keep_readout(m, inp, out):
            inputs["readout"] = inp[0].detach()
            if out.requires_grad:
                out.retain_grad()
            currents["readout"] = out

        handles.append(readout[1].register_forward_hook(keep_readout))
    try:
        model.zero_grad(set_to_none=True)
        x, y = x.to(next(model.parameters()).device), y.to(next(model.parameters()).device)
        loss_fn(model(x), y).backward()
    finally:
        for h in handles:
            h.remove()
    out = []
    prev_h: Tensor | None = None  # h(u) of the previous layer's neurons, [T, B, in]
    for name, lin, lif in pairs:
        T = currents[name].shape[0]
        B = currents[name].shape[1]
        o = inputs[name].reshape(T, B, -1)
        mem = lif.mem_seq.detach()
        h = lif.surrogate.grad(mem - float(lif.threshold)) != 0
        g = currents[name].grad
        du = (g != 0) if g is not None else torch.zeros_like(mem, dtype=torch.bool)
        nz_o = (o != 0).flatten(2).sum(-1).float()  # [T, B]
        nz_du = du.flatten(2).sum(-1).float()
        nz_hprev = prev_h.flatten(2).sum(-1).float() if prev_h is not None else torch.zeros_like(nz_o)
        dense = float(T * B * lin.in_features * lin.out_features)
        wl = LayerWorkload(name, lin.in_features, lin.out_features, T, B, float((o != 0).float().mean()),
                           float(h.float().mean()), float(du.float().mean()))
        first = prev_h is None  # nothing needs the gradient of the network's input
        wl.ops = {"forward dense MAC": dense, "forward AC": float(nz_o.sum()) * lin.out_features,
                  "backward dense MAC": 0.0 if first else dense,
                  "backward dual-sparse MAC": 0.0 if first else float((nz_du * nz_hprev).sum()),
                  "update dense MAC": dense, "update sparse AC": float((nz_du * nz_o).sum())}
        wl.per_step = {"spike_density": (nz_o.mean(1) / lin.in_features).tolist(),
                       "surrogate_density": h.flatten(2).float().mean((1, 2)).tolist(),
                       "grad_density": du.flatten(2).float().mean((1, 2)).tolist()}
        out.append(wl)
        prev_h = h
    if readout is not None:
        out.append(_readout_workload(readout[0], readout[1], inputs["readout"], currents["readout"], prev_h))
    for lif, flag in saved_flags:
        lif.record_mem = flag
    return out


def _readout_workload(name: str, lin: nn.Linear, spikes: Tensor, out: Tensor, prev_h: Tensor) -> LayerWorkload:
    """The non-spiking readout layer: its neurons have no surrogate (``h`` ≡ 1, surrogate density
    1), the gradient at its output ``δy = ∂L/∂y`` is what the loss sends back (dense for a
    cross-entropy on the averaged current), and its backward pass reaches the last hidden
    layer's neurons only where their own ``h(u)`` is non-zero (the same dual sparsity)."""
    o = spikes.reshape(prev_h.shape[0], -1, lin.in_features)  # the fold's [T·B, in] back to [T, B, in]
    T, B = o.shape[:2]
    g = out.grad.reshape(T, B, -1) if out.grad is not None else torch.zeros(T, B, lin.out_features)
    dy = g != 0
    nz_o = (o != 0).flatten(2).sum(-1).float()
    nz_dy = dy.flatten(2).sum(-1).float()
    nz_hprev = prev_h.flatten(2).sum(-1).float()
    dense = float(T * B * lin.in_features * lin.out_features)
    wl = LayerWorkload(name, lin.in_features, lin.out_features, T, B, float((o != 0).float().mean()), 1.0,
                       float(dy.float().mean()))
    wl.ops = {"forward dense MAC": dense, "forward AC": float(nz_o.sum()) * lin.out_features,
              "backward dense MAC": dense, "backward dual-sparse MAC": float((nz_dy * nz_hprev).sum()),
              "update dense MAC": dense, "update sparse AC": float((nz_dy * nz_o).sum())}
    wl.per_step = {"spike_density": (nz_o.mean(1) / lin.in_features).tolist(),
                   "surrogate_density": [1.0] * T,
                   "grad_density": dy.flatten(2).float().mean((1, 2)).tolist()}
    return wl
