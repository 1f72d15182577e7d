"""Multi-step plumbing: stateless layers applied to ``[T, B, ...]`` by folding time into batch.

A convolution, linear map, pooling or batch-norm has no state across time, so it can run
once on ``[T·B, ...]`` instead of ``T`` times on ``[B, ...]`` — one large call instead of
``T`` small ones, which is where a multi-step SNN beats a per-step loop. Only the neurons
loop over time (:class:`compendium.spiking.neuron.LIF` in ``multi`` mode).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SeqFold(nn.Module):
    """Apply ``module`` to ``[T, B, ...]`` as one call on ``[T·B, ...]``."""

    def __init__(self, *modules: nn.Module):
        super().__init__()
        self.module = modules[0] if len(modules) == 1 else nn.Sequential(*modules)

    def forward(self, x: Tensor) -> Tensor:
        return self.fold(self.module, x)

    @staticmethod
    def fold(module: nn.Module, x: Tensor) -> Tensor:
        """``module`` applied to ``x [T, B, ...]`` as one call on ``[T·B, ...]``, back to ``[T, B, ...]``."""
        T, B = x.shape[:2]
        y = module(x.reshape(T * B, *x.shape[2:]))
        return y.reshape(T, B, *y.shape[1:])


class MeanOverTime(nn.Module):
    """Rate/average readout: ``[T, B, ...] -> [B, ...]``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(0)


ENCODINGS = ("direct", "rate", "spikes")


class Encoder(nn.Module):
    """Wrap an encoder function ``f(x, T) -> [T, B, ...]`` as a module (so models own their coding).

    ``"spikes"`` takes inputs that already are spike/event tensors, stored batch-first as
    datasets hold them (``[B, T, ...]``), and only moves time to the front."""

    def __init__(self, kind: str, T: int, generator: torch.Generator | None = None):
        super().__init__()
        from compendium.spiking import encoding

        if kind not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {kind!r}")
        self.kind, self.T, self.generator = kind, int(T), generator
        self._fn = {"direct": encoding.direct, "rate": encoding.rate, "spikes": None}[kind]

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "spikes":
            if x.ndim < 3 or x.shape[1] != self.T:
                raise ValueError(f"spike input must be [B, T={self.T}, ...], got shape {tuple(x.shape)}")
            return x.transpose(0, 1)
        if self.kind == "rate":
            return self._fn(x, self.T, self.generator)
        return self._fn(x, self.T)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, T={self.T}"
