"""Euclidean projections onto the compression constraint sets (pure functions: they never
write into their argument — the official pruning code zeroes the live weights in place at
ADMM initialisation, research notes §3.5).

- pruning, ``S_k = {W : ||W||_0 <= k}``: keep the ``k`` largest magnitudes, zero the rest
  (the exact projection); ``k = round((1 - sparsity) · n)`` per layer;
- quantisation to a ``b``-bit symmetric uniform grid ``α · {-L, ..., L}``,
  ``L = 2^(b-1) - 1`` (``b = 2``: ternary, the grid of the official code's Eq. 13), with the
  scale fitted by the alternating least squares the official code uses for ternary weights:
  ``α = <V, Q> / <Q, Q>``, ``Q = clip(round(V / α), -L, L)``; ``b = 1`` is ``α · sign(V)``.
  The paper's multi-bit grid could not be read ([U]); this generalisation is ours ([I]).
- both: prune, then quantise the kept weights (the scale fitted on them alone).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def prune(w: Tensor, sparsity: float) -> Tensor:
    """Keep the ``round((1 - sparsity) · numel)`` largest-magnitude entries of ``w``."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    k = max(1, int(round((1.0 - sparsity) * w.numel())))
    flat = w.reshape(-1)
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[flat.abs().topk(k).indices] = True
    return torch.where(keep, flat, torch.zeros_like(flat)).reshape(w.shape)


def _levels(bits: int) -> int:
    if bits < 1 or bits > 16:
        raise ValueError(f"bits must be in 1..16, got {bits}")
    return 2 ** (bits - 1) - 1


def quantize_scale(v: Tensor, bits: int, iterations: int = 100) -> tuple[float, Tensor]:
    """``(α, Q)`` with ``Q`` integer levels in ``[-L, L]`` minimising ``||v - α Q||`` by alternation."""
    L = _levels(bits)
    if v.numel() == 0 or float(v.abs().max()) == 0.0:
        return 0.0, torch.zeros_like(v)
    if bits == 1:
        q = torch.sign(v)
        q[q == 0] = 1
        return float(v.abs().mean()), q
    alpha = float(v.abs().max()) / L
    q = torch.clamp(torch.round(v / alpha), -L, L)
    # Lloyd-style alternation: the squared error never increases, so it stops at a pair where
    # alpha is optimal for Q and Q is the nearest grid point for alpha
    for _ in range(iterations):
        alpha = float((v * q).sum()) / max(float((q * q).sum()), 1e-30)
        q_new = torch.clamp(torch.round(v / alpha), -L, L)
        if torch.equal(q_new, q):
            break
        q = q_new
    alpha = float((v * q).sum()) / max(float((q * q).sum()), 1e-30)
    return alpha, q


def quantize(w: Tensor, bits: int) -> Tensor:
    """Nearest point of the fitted ``b``-bit grid ``α · {-L..L}`` (see module docstring)."""
    alpha, q = quantize_scale(w.reshape(-1).detach(), bits)
    return (alpha * q).reshape(w.shape).to(w.dtype)


def quantize_kept(w: Tensor, keep: Tensor, bits: int) -> Tensor:
    """Quantise the entries of ``w`` where ``keep`` is non-zero (scale fitted on them alone);
    zero elsewhere."""
    keep = keep.bool()
    out = torch.zeros_like(w)
    if keep.any():
        alpha, q = quantize_scale(w[keep].detach(), bits)
        out[keep] = (alpha * q).to(w.dtype)
    return out


def prune_quantize(w: Tensor, sparsity: float, bits: int) -> Tensor:
    """Prune, then quantise the surviving weights (zeros stay zero)."""
    pruned = prune(w, sparsity)
    return quantize_kept(pruned, pruned != 0, bits)


@dataclass(frozen=True)
class Constraint:
    """A layer's compression target: ``sparsity`` (fraction of zero weights, or ``None``) and
    ``bits`` (weight bit width, or ``None`` for full precision)."""

    sparsity: float | None = None
    bits: int | None = None

    def __post_init__(self):
        if self.sparsity is None and self.bits is None:
            raise ValueError("a constraint needs a sparsity, a bit width or both")
        if self.sparsity is not None and not 0.0 <= self.sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if self.bits is not None:
            _levels(self.bits)

    def project(self, w: Tensor) -> Tensor:
        if self.sparsity is not None and self.bits is not None:
            return prune_quantize(w, self.sparsity, self.bits)
        if self.sparsity is not None:
            return prune(w, self.sparsity)
        return quantize(w, self.bits)

    def satisfied(self, w: Tensor, rtol: float = 1e-5) -> bool:
        """Does ``w`` lie in the constraint set (at most ``k`` non-zeros; values on one grid)?"""
        ok = True
        if self.sparsity is not None:
            k = max(1, int(round((1.0 - self.sparsity) * w.numel())))
            ok &= int((w != 0).sum()) <= k
        if self.bits is not None:
            nz = w[w != 0].abs()
            if nz.numel():
                alpha = float(nz.min())
                # every non-zero magnitude is an integer multiple (<= L) of one scale; the
                # smallest magnitude present is a multiple m·α of the scale, m in 1..L
                L = _levels(self.bits)
                found = False
                for m in range(1, max(L, 1) + 1):
                    a = alpha / m
                    ratio = nz / a
                    if torch.allclose(ratio, ratio.round(), rtol=0, atol=rtol * L * 10) and float(ratio.round().max()) <= max(L, 1):
                        found = True
                        break
                ok &= found
        return bool(ok)

    def describe(self) -> str:
        parts = []
        if self.sparsity is not None:
            parts.append(f"{self.sparsity:.0%} pruned")
        if self.bits is not None:
            parts.append({1: "binary", 2: "ternary"}.get(self.bits, f"{self.bits}-bit"))
        return " + ".join(parts)
