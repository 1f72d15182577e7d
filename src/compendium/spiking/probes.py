"""Probes of a network at initialisation: how gradients and spikes propagate through depth.

The block-dynamical-isometry view of STBP-tdBN: a deep network trains well when the
gradient's norm neither shrinks nor grows from block to block. :func:`gradient_flow` runs
one forward/backward pass and returns, per residual block, the norm of ``∂L/∂(block output)``
and the block's output firing rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class GradientFlow:
    grad_norms: list[float]  # per block, input side first
    firing_rates: list[float]  # per block: mean spike rate of the LIF neurons inside it (or its output)
    output_means: list[float] = None  # per block: mean of the block's output (spikes, spike sums or membranes)

    @property
    def log_ratios(self) -> list[float]:
        """``log10(‖g_i‖ / ‖g_{i+1}‖)`` between consecutive blocks (0 is perfect isometry)."""
        g = [max(v, 1e-30) for v in self.grad_norms]
        return [math.log10(a / b) for a, b in zip(g[:-1], g[1:])]

    @property
    def attenuation(self) -> float:
        """``log10(‖g_first‖ / ‖g_last‖)``: negative when the gradient vanishes towards the input."""
        g = [max(v, 1e-30) for v in self.grad_norms]
        return math.log10(g[0] / g[-1])

    @property
    def mean_abs_log_ratio(self) -> float:
        r = self.log_ratios
        return sum(abs(v) for v in r) / len(r) if r else 0.0


def gradient_flow(model: nn.Module, blocks: list[nn.Module], x: Tensor, y: Tensor) -> GradientFlow:
    """One cross-entropy forward/backward pass: at every block, the gradient norm at its output
    and the firing rate of its LIF neurons (blocks whose output is membrane-level, like the
    MS block, are measured inside)."""
    from compendium import smoke
    from compendium.spiking.neuron import LIF

    x, y = smoke.batch(x, y)  # smoke mode: a batch of two at the real shape

    outputs: list[Tensor] = []
    spikes: dict[int, list[float]] = {i: [] for i in range(len(blocks))}

    def keep(_m, _inp, out):
        out.retain_grad()
        outputs.append(out)

    handles = [b.register_forward_hook(keep) for b in blocks]
    for i, b in enumerate(blocks):
        for m in b.modules():
            if isinstance(m, LIF):
                handles.append(m.register_forward_hook(lambda _m, _i, out, i=i: spikes[i].append(float(out.detach().mean()))))
    try:
        model.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
    finally:
        for h in handles:
            h.remove()
    norms = [float(o.grad.norm()) if o.grad is not None else 0.0 for o in outputs]
    means = [float(o.detach().mean()) for o in outputs]
    rates = [sum(spikes[i]) / len(spikes[i]) if spikes[i] else means[i] for i in range(len(outputs))]
    return GradientFlow(norms, rates, means)


def depth_sweep(build, norms: list[str], blocks_per_stage: list[int], x: Tensor, y: Tensor, seed: int = 0):
    """:func:`gradient_flow` for every (norm, depth): ``build(norm, n)`` returns a model with a
    ``blocks`` list. Returns ``(table, flows)``: a DataFrame with one row per pair and the
    :class:`GradientFlow` objects keyed by ``(norm, depth)``."""
    import pandas as pd

    rows, flows = [], {}
    for norm in norms:
        for n in blocks_per_stage:
            torch.manual_seed(seed)
            model = build(norm, n)
            gf = gradient_flow(model, list(model.blocks), x, y)
            depth = model.layout.depth()
            flows[(norm, depth)] = gf
            rows.append({"norm": norm, "depth": depth, "first-block grad": gf.grad_norms[0],
                         "last-block grad": gf.grad_norms[-1], "attenuation (log10)": gf.attenuation,
                         "mean |log10 ratio| per block": gf.mean_abs_log_ratio,
                         "min firing rate": min(gf.firing_rates), "max firing rate": max(gf.firing_rates)})
    return pd.DataFrame(rows), flows
