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

from compendium import smoke
from compendium.attacks.spike import AttackResult, output_loss


def _bim_l2(model: Callable[[Tensor], Tensor], start: Tensor, y: Tensor, loss_fn: Callable[[Tensor, Tensor], Tensor],
            step: float, iterations: int, clip: tuple[float, float],
            query: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The one BIM loop of both attacks, on one batch: iterate

        z ← clip(z + step · ∇_q L / ‖∇_q L‖₂),   q = query(z),   z_0 = start,

    with the gradient taken at the queried point ``q``; each sample stops at its first success
    (its last query is kept), and the pass after the last step only checks for success.
    Returns the last queried points, clean correctness, success, steps taken and the number of
    steps with a zero gradient (per sample)."""
    z, q = start.clone(), start.clone()
    with torch.no_grad():
        correct = model(start).argmax(1) == y
    active, done = correct.clone(), torch.zeros_like(correct)
    its = torch.zeros(len(y), dtype=torch.long, device=y.device)
    zero_steps = torch.zeros(len(y), dtype=torch.long, device=y.device)
    for it in range(smoke.limit(iterations) + 1):  # smoke mode: two iterations
        idx = active.nonzero().squeeze(1)
        if len(idx) == 0:
            break
        a = query(z[idx]).requires_grad_(True)
        q[idx] = a.detach()
        out = model(a)
        fooled = out.argmax(1) != y[idx]
        done[idx[fooled]] = True
        active[idx[fooled]] = False
        if it == iterations:
            break
        grad, = torch.autograd.grad(loss_fn(out, y[idx]) * len(idx), a)
        keep_idx = ~fooled
        g = grad[keep_idx]
        norm = g.flatten(1).norm(dim=1).view(-1, *[1] * (g.ndim - 1))
        zero_steps[idx[keep_idx][norm.flatten() == 0]] += 1
        its[idx[keep_idx]] += 1
        z[idx[keep_idx]] = (z[idx[keep_idx]] + step * g / norm.clamp_min(1e-12)).clamp(*clip)
    return q, correct, done & correct, its, zero_steps


def _columns(N: int) -> dict[str, np.ndarray]:
    return {k: np.zeros(N, dtype=dt) for k, dt in (("clean_correct", bool), ("success", bool), ("iterations", int),
                                                    ("flips", float), ("l2", float), ("zero_grad_steps", int))}


def _store(cols: dict[str, np.ndarray], sl: slice, correct: Tensor, success: Tensor, its: Tensor, zero_steps: Tensor,
           flips: Tensor, diff: Tensor) -> None:
    cols["clean_correct"][sl] = correct.cpu().numpy()
    cols["success"][sl] = success.cpu().numpy()
    cols["iterations"][sl] = its.cpu().numpy()
    cols["flips"][sl] = flips.cpu().numpy()
    cols["l2"][sl] = diff.flatten(1).norm(dim=1).cpu().numpy()
    cols["zero_grad_steps"][sl] = zero_steps.cpu().numpy()


def l2_attack(model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, *, loss: str = "ce", step: float = 0.1,
              iterations: int = 50, clip: tuple[float, float] = (0.0, 1.0), batch_size: int = 256,
              keep: bool = False) -> AttackResult:
    """Untargeted L2 BIM with early stopping on analog inputs ``[N, ...]`` (:func:`_bim_l2` with
    the iterate itself queried); ``flips`` counts the changed pixels."""
    if step <= 0 or iterations < 1:
        raise ValueError("step must be > 0 and iterations >= 1")
    loss_fn = output_loss(loss)
    N = len(y)
    cols = _columns(N)
    kept = x.clone() if keep else None
    for lo in range(0, N, batch_size):
        hi = min(lo + batch_size, N)
        x0 = x[lo:hi].float()
        adv, correct, success, its, zero_steps = _bim_l2(model, x0, y[lo:hi], loss_fn, step, iterations, clip,
                                                         query=lambda z: z.clone())
        diff = adv - x0
        _store(cols, slice(lo, hi), correct, success, its, zero_steps, (diff.abs() > 1e-12).flatten(1).sum(1), diff)
        if keep:
            kept[lo:hi] = adv
    return AttackResult(**cols, adversarial=kept)


def lattice_l2_attack(model: Callable[[Tensor], Tensor], spikes: Tensor, y: Tensor, *, loss: str = "ce",
                      step: float = 0.1, iterations: int = 40, batch_size: int = 256) -> AttackResult:
    """Untargeted L2 BIM on the rate image ``r = mean_t S_t`` of spike trains ``[T, N, ...]``
    for a ``model`` that reads rate images ``[N, ...]``, with every query on the lattice:

        q_i = round(T · z_i) / T,   z ← clip(z + step · ∇_q L / ‖∇_q L‖₂, 0, 1),   z_0 = r

    (gradient at the queried lattice point ``q``; :func:`_bim_l2`); a sample stops at its first
    success. The perturbation of ``q`` needs ``T · |q_i − r_i|`` flipped bits at pixel ``i``:
    ``flips`` is their sum, ``l2`` is ``‖q − r‖₂`` (the rate-image L2 of the spike attacks)."""
    if step <= 0 or iterations < 1:
        raise ValueError("step must be > 0 and iterations >= 1")
    if not torch.all((spikes == 0) | (spikes == 1)):
        raise ValueError("lattice_l2_attack needs binary input spikes")
    T, N = spikes.shape[:2]
    loss_fn = output_loss(loss)
    cols = _columns(N)
    for lo in range(0, N, batch_size):
        hi = min(lo + batch_size, N)
        r0 = spikes[:, lo:hi].float().mean(0)
        q, correct, success, its, zero_steps = _bim_l2(model, r0, y[lo:hi], loss_fn, step, iterations, (0.0, 1.0),
                                                       query=lambda z: (z * T).round().clamp(0, T) / T)
        diff = q - r0
        _store(cols, slice(lo, hi), correct, success, its, zero_steps, (T * diff.abs()).round().flatten(1).sum(1), diff)
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
