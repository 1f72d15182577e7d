"""Compression metrics, as this book defines them (the paper defines several; their exact
formulas could not be read, [U]):

- connection ratio: non-zero weights / all weights of the compressed layers;
- weight bit width: bits per stored non-zero weight (32 when not quantised);
- model-size compression ratio: ``32 · n_weights / Σ_l bits_l · nnz_l`` (weights only; no
  index overhead for the sparse format — stated, and it flatters pruning);
- spikes per sample and active operations (SOPs through non-zero weights) from the shared
  :class:`~compendium.spiking.counters.OpCounter`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from compendium.compression.admm import compressible
from compendium.compression.projections import Constraint
from compendium.spiking.counters import OpCounter


@torch.no_grad()
def compression_metrics(model: nn.Module, constraints: dict[str, Constraint] | None = None,
                        inputs: Tensor | None = None, time_steps: int = 1, batch_size: int = 256) -> dict[str, Any]:
    """Weight statistics of every synaptic layer and, given ``inputs``, spikes and active
    operations per sample."""
    constraints = constraints or {}
    total = nnz = bits_total = 0.0
    layers = []
    for n, m in compressible(model).items():
        w = m.weight.detach()
        c = constraints.get(n)
        bits = c.bits if c is not None and c.bits is not None else 32
        k = float((w != 0).sum())
        layers.append({"layer": n, "weights": w.numel(), "nonzero": int(k), "bits": bits,
                       "distinct values": int(torch.unique(w).numel())})
        total += w.numel()
        nnz += k
        bits_total += bits * k
    out: dict[str, Any] = {"connection_ratio": nnz / total, "mean_bits": bits_total / max(nnz, 1),
                           "size_compression": 32 * total / max(bits_total, 1), "layers": layers}
    if inputs is not None:
        was = model.training
        model.eval()
        with OpCounter(model, skip_zero_weights=True) as counter:
            for i in range(0, len(inputs), batch_size):
                model(inputs[i:i + batch_size])
        model.train(was)
        tot = counter.totals(len(inputs), time_steps=time_steps)
        spikes = sum(r.spikes for r in counter.spikes.values()) / len(inputs)
        out.update({"spikes_per_sample": spikes, "active_ops": tot["snn_sops"], "dense_macs": tot["ann_macs"],
                    "snn_macs": tot["snn_macs"]})
    return out
