"""Analog-input attacks for the ANN side of the SNN-vs-ANN comparison, and transfer.

:func:`l2_attack` is the basic iterative method (BIM / unprojected PGD) in L2: repeated
normalised-gradient steps of length ``step``, clipped to the valid pixel range, each sample
stopping at its first success, so the recorded norm approximates the smallest perturbation
that fools it. This is the ANN counterpart chosen for this book (the paper's own ANN attack
settings could not be read: research notes [U]/[I]).

:func:`lattice_l2_attack` is the same BIM for a model that reads the *rate image* of a spike
train (the time average of ``T`` binary frames, values on the lattice ``{0, 1/T, …, 1}``):
the iterate moves freely and the model is queried at its nearest lattice point, which is
realisable by flipping ``T·|Δr|`` bits per pixel. It is the rate-input ANN's strongest
standard attack in the chapter's SNN-vs-ANN comparison.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from compendium.attacks.spike import AttackResult, output_loss


def l2_attack(model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, *, loss: str = "ce", step: float = 0.1,
              iterations: int = 50, clip: tuple[float, float] = (0.0, 1.0), batch_size: int = 256,
              keep: bool = False) -> AttackResult:
    """Untargeted L2 BIM with early stopping on analog inputs ``[N, ...]``."""
    if step <= 0 or iterations < 1:
        raise ValueError("step must be > 0 and iterations >= 1")
    loss_fn = output_loss(loss)
    N = len(y)
    cols = {k: np.zeros(N, dtype=dt) for k, dt in (("clean_correct", bool), ("success", bool), ("iterations", int),
                                                      ("flips", float), ("l2", float), ("zero_grad_steps", int))}
    kept = x.clone() if keep else None
    for lo in range(0, N, batch_size):
        hi = min(lo + batch_size, N)
        x0, yy = x[lo:hi].float(), y[lo:hi]
        adv = x0.clone()
        with torch.no_grad():
            correct = model(x0).argmax(1) == yy
        active, done = correct.clone(), torch.zeros_like(correct)
        its = torch.zeros(len(yy), dtype=torch.long, device=yy.device)
        zero_steps = torch.zeros(len(yy), dtype=torch.long, device=yy.device)
        for it in range(iterations + 1):
            idx = active.nonzero().squeeze(1)
            if len(idx) == 0:
                break
            a = adv[idx].clone().requires_grad_(True)
            out = model(a)
            fooled = out.argmax(1) != yy[idx]
            done[idx[fooled]] = True
            active[idx[fooled]] = False
            if it == iterations:  # the last pass only checks for success
                break
            grad, = torch.autograd.grad(loss_fn(out, yy[idx]) * len(idx), a)
            keep_idx = ~fooled
            g = grad[keep_idx]
            norm = g.flatten(1).norm(dim=1).view(-1, *[1] * (g.ndim - 1))
            zero = norm.flatten() == 0
            zero_steps[idx[keep_idx][zero]] += 1
            its[idx[keep_idx]] += 1
            adv[idx[keep_idx]] = (a.detach()[keep_idx] + step * g / norm.clamp_min(1e-12)).clamp(*clip)
        diff = adv - x0
        cols["clean_correct"][lo:hi] = correct.cpu().numpy()
        cols["success"][lo:hi] = (done & correct).cpu().numpy()
        cols["iterations"][lo:hi] = its.cpu().numpy()
        cols["flips"][lo:hi] = (diff.abs() > 1e-12).flatten(1).sum(1).cpu().numpy()
        cols["l2"][lo:hi] = diff.flatten(1).norm(dim=1).cpu().numpy()
        cols["zero_grad_steps"][lo:hi] = zero_steps.cpu().numpy()
        if keep:
            kept[lo:hi] = adv
    return AttackResult(**cols, adversarial=kept)


def lattice_l2_attack(model: Callable[[Tensor], Tensor], spikes: Tensor, y: Tensor, *, loss: str = "ce",
                      step: float = 0.1, iterations: int = 40, batch_size: int = 256) -> AttackResult:
    """Untargeted L2 BIM on the rate image ``r = mean_t S_t`` of spike trains ``[T, N, ...]``
    for a ``model`` that reads rate images ``[N, ...]``, with every query on the lattice:

        q_i = round(T · z_i) / T,   z ← clip(z + step · ∇_q L / ‖∇_q L‖₂, 0, 1),   z_0 = r

    (gradient at the queried lattice point ``q``); a sample stops at its first success. The
    perturbation of ``q`` needs ``T · |q_i − r_i|`` flipped bits at pixel ``i``: ``flips`` is
    their sum, ``l2`` is ``‖q − r‖₂`` (the rate-image L2 of the spike attacks)."""
    if step <= 0 or iterations < 1:
        raise ValueError("step must be > 0 and iterations >= 1")
    if not torch.all((spikes == 0) | (spikes == 1)):
        raise ValueError("lattice_l2_attack needs binary input spikes")
    T, N = spikes.shape[:2]
    loss_fn = output_loss(loss)
    cols = {k: np.zeros(N, dtype=dt) for k, dt in (("clean_correct", bool), ("success", bool), ("iterations", int),
                                                      ("flips", float), ("l2", float), ("zero_grad_steps", int))}
    lattice = lambda z: (z * T).round().clamp(0, T) / T
    for lo in range(0, N, batch_size):
        hi = min(lo + batch_size, N)
        r0, yy = spikes[:, lo:hi].float().mean(0), y[lo:hi]
        z, q = r0.clone(), r0.clone()
        with torch.no_grad():
            correct = model(r0).argmax(1) == yy
        active, done = correct.clone(), torch.zeros_like(correct)
        its = torch.zeros(len(yy), dtype=torch.long, device=yy.device)
        zero_steps = torch.zeros(len(yy), dtype=torch.long, device=yy.device)
        for it in range(iterations + 1):
            idx = active.nonzero().squeeze(1)
            if len(idx) == 0:
                break
            a = lattice(z[idx]).requires_grad_(True)
            q[idx] = a.detach()
            out = model(a)
            fooled = out.argmax(1) != yy[idx]
            done[idx[fooled]] = True
            active[idx[fooled]] = False
            if it == iterations:  # the last pass only checks for success
                break
            grad, = torch.autograd.grad(loss_fn(out, yy[idx]) * len(idx), a)
            keep_idx = ~fooled
            g = grad[keep_idx]
            norm = g.flatten(1).norm(dim=1).view(-1, *[1] * (g.ndim - 1))
            zero_steps[idx[keep_idx][norm.flatten() == 0]] += 1
            its[idx[keep_idx]] += 1
            z[idx[keep_idx]] = (z[idx[keep_idx]] + step * g / norm.clamp_min(1e-12)).clamp(0, 1)
        diff = q - r0
        cols["clean_correct"][lo:hi] = correct.cpu().numpy()
        cols["success"][lo:hi] = (done & correct).cpu().numpy()
        cols["iterations"][lo:hi] = its.cpu().numpy()
        cols["flips"][lo:hi] = (T * diff.abs()).round().flatten(1).sum(1).cpu().numpy()
        cols["l2"][lo:hi] = diff.flatten(1).norm(dim=1).cpu().numpy()
        cols["zero_grad_steps"][lo:hi] = zero_steps.cpu().numpy()
    return AttackResult(**cols)


@torch.no_grad()
def transfer(target: Callable[[Tensor], Tensor], clean: Tensor, adversarial: Tensor, labels: Tensor,
             crafted: np.ndarray, batch_dim: int = 0, batch_size: int = 256) -> dict[str, float]:
    """Black-box transfer: of the examples that fooled the substitute (``crafted``) and that
    the target classifies right when clean, the fraction that also fool the target."""
    def predict(inputs: Tensor) -> Tensor:
        outs = []
        for lo in range(0, inputs.shape[batch_dim], batch_size):
            outs.append(target(inputs.narrow(batch_dim, lo, min(batch_size, inputs.shape[batch_dim] - lo))).argmax(1))
        return torch.cat(outs)

    clean_ok = (predict(clean) == labels).cpu().numpy()
    fooled = (predict(adversarial) != labels).cpu().numpy()
    pool = crafted & clean_ok
    return {"candidates": int(pool.sum()), "transfer_rate": float((fooled & pool).sum() / max(pool.sum(), 1))}
