"""ADMM around STBP training (Deng, Wu et al., arXiv 1911.00822, §III; Boyd et al. 2011).

The constrained problem ``min_W L(W)  s.t.  W_l ∈ S_l`` is split with auxiliary ``Z_l`` and
scaled duals ``U_l``:

    W-step:  min_W  L(W) + Σ_l ρ/2 · ||W_l - Z_l + U_l||²      (a few epochs of STBP + Adam)
    Z-step:  Z_l ← Π_{S_l}(W_l + U_l)                          (the projections)
    U-step:  U_l ← U_l + W_l - Z_l
    ρ ← ρ · growth                                             (penalty schedule)

then a hard projection ``W_l ← Π(W_l)`` and fine-tuning that keeps the constraint. This is
the textbook (squared, scaled-dual) form; the official pruning script uses non-squared norms
with fixed tiny weights (research notes §3.2), stated in the chapter.

Fine-tuning uses a straight-through projection: the forward pass sees ``Π(W)`` (with the
support fixed at the hard projection), the gradient updates the latent ``W``; at the end the
weights are replaced by their exact projection, so the constraint holds exactly.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from compendium.compression.projections import Constraint, quantize_kept


def compressible(model: nn.Module) -> dict[str, nn.Module]:
    """The synaptic layers (``nn.Linear``, ``nn.Conv2d``) of ``model`` by name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


class ADMM:
    """ADMM state for the weights of ``layers`` (name → constraint)."""

    def __init__(self, model: nn.Module, constraints: dict[str, Constraint], rho: float = 1e-3, growth: float = 1.5):
        if rho <= 0 or growth < 1:
            raise ValueError("rho must be > 0 and growth >= 1")
        mods = compressible(model)
        unknown = set(constraints) - set(mods)
        if unknown:
            raise ValueError(f"no synaptic layer named {sorted(unknown)}; layers: {sorted(mods)}")
        self.layers = {n: mods[n] for n in constraints}
        self.constraints = constraints
        self.rho, self.growth = rho, growth
        with torch.no_grad():
            self.Z = {n: c.project(self.layers[n].weight.detach().clone()) for n, c in constraints.items()}
            self.U = {n: torch.zeros_like(z) for n, z in self.Z.items()}
        self.residuals: list[dict[str, float]] = []

    def penalty(self) -> Tensor:
        """``Σ ρ/2 ||W - Z + U||²`` (added to the task loss in the W-step)."""
        return sum(0.5 * self.rho * (m.weight - self.Z[n] + self.U[n]).pow(2).sum() for n, m in self.layers.items())

    @torch.no_grad()
    def update(self) -> dict[str, float]:
        """Z- and U-steps, then the ρ schedule. Returns the relative primal residual
        ``Σ||W - Z|| / Σ||W||`` and the dual residual ``ρ Σ||Z - Z_old||`` before the update of ρ."""
        primal = dual = norm = 0.0
        for n, m in self.layers.items():
            w = m.weight.detach()
            z_old = self.Z[n]
            self.Z[n] = self.constraints[n].project(w + self.U[n])
            self.U[n] = self.U[n] + w - self.Z[n]
            primal += float((w - self.Z[n]).norm())
            dual += self.rho * float((self.Z[n] - z_old).norm())
            norm += float(w.norm())
        rec = {"primal": primal / max(norm, 1e-12), "dual": dual, "rho": self.rho}
        self.residuals.append(rec)
        self.rho *= self.growth
        return rec


@torch.no_grad()
def hard_project(model: nn.Module, constraints: dict[str, Constraint]) -> None:
    """``W_l ← Π_l(W_l)`` in place for every constrained layer."""
    mods = compressible(model)
    for n, c in constraints.items():
        mods[n].weight.copy_(c.project(mods[n].weight.detach()))


class _StraightThrough(nn.Module):
    def __init__(self, constraint: Constraint, mask: Tensor | None):
        super().__init__()
        self.constraint = constraint
        self.register_buffer("mask", mask)

    def forward(self, w: Tensor) -> Tensor:
        masked = w * self.mask if self.mask is not None else w
        if self.constraint.bits is not None:
            target = self.constraint.project(masked.detach()) if self.mask is None else quantize_kept(masked.detach(), self.mask, self.constraint.bits)
        else:
            target = masked.detach()
        out = masked + (target - masked).detach()
        if out.stride() != w.stride():
            # keep the weight's layout: a conv weight with one input channel is channels-last only
            # by its strides (9, 1, 3, 1 for 3×3), which element-wise results do not keep, and the
            # layer would run NCHW, unlike the same net outside fine-tuning
            out = torch.empty_like(w).copy_(out)
        return out


@contextmanager
def constrained_finetuning(model: nn.Module, constraints: dict[str, Constraint]) -> Iterator[nn.Module]:
    """Within the block the constrained layers compute with their projected weights
    (straight-through gradient to the latent weights; pruned support frozen as it is on
    entry). On exit the weights become their exact projection."""
    mods = compressible(model)
    for n, c in constraints.items():
        w = mods[n].weight.detach()
        mask = (w != 0).to(w.dtype) if c.sparsity is not None else None
        parametrize.register_parametrization(mods[n], "weight", _StraightThrough(c, mask))
    try:
        yield model
    finally:
        for n, c in constraints.items():
            mask = mods[n].parametrizations.weight[0].mask
            parametrize.remove_parametrizations(mods[n], "weight", leave_parametrized=False)
            with torch.no_grad():
                w = mods[n].weight.detach()
                if mask is not None:
                    # keep the frozen support; quantise the kept weights
                    final = quantize_kept(w * mask, mask, c.bits) if c.bits is not None else w * mask
                else:
                    final = c.project(w)
                mods[n].weight.copy_(final)
