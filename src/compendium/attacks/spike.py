"""Spike-compatible adversarial attack: the gradient-to-spike (G2S) converter and the
restricted spike flipper (RSF), after Liang, Hu, Deng et al., "Exploring adversarial attack
in spiking neural networks with spike-compatible gradient" (arXiv 2001.01587; IEEE TNNLS 2021).

The attacked input is the binary spike tensor ``S ∈ {0,1}^{T×…}`` itself, so an adversarial
example must stay a valid spike train. The gradient ``g = ∂L/∂S`` (BPTT with the surrogate)
is continuous; the attack turns it into legal flips.

G2S (the arXiv v1 "gradient-to-spike converter"), per sample:

    p   = (|g| - min|g|) / (max|g| - min|g|)          min-max normalisation to [0, 1]
    M   ~ Bernoulli(p)
    ĝ   = sign(g) ⊙ M  ∈ {-1, 0, +1}
    S  ← clip(S + ĝ, 0, 1)                             only 0→1 (ĝ=+1) and 1→0 (ĝ=-1) survive

RSF (the v1 "gradient trigger"): where a sample's gradient is exactly zero everywhere — common
in SNNs, whose surrogate is zero away from threshold — flip random spikes instead:
``S ← S xor M``, ``M ~ Bernoulli(γ)`` (γ the turnover rate; 0.05 in both public
re-implementations). The paper's exact normalisation and stopping rule could not be read
(research notes [U]); this is the form both re-implementations agree on, stated as such in
the chapter. Untargeted: each step ascends the loss; a sample stops at its first success.

Top-k (:func:`topk_flips`), the standard sparse attack used beside G2S for the SNN-vs-ANN
comparison: each step flips the ``k`` *legal* bits with the largest ``|g|`` — a 0 where
``g > 0``, a 1 where ``g < 0`` — the steepest first-order ascent of the loss per flipped bit
(the L1 steepest-ascent direction is the coordinate with the largest ``|g|``; cf. JSMA,
Papernot et al. 2016, and SLIDE, Tramèr & Boneh 2019, which step along the top coordinates).
When a step fools the model, a binary search over that step's flips (largest ``|g|`` first)
keeps the shortest prefix that still fools it, so the flip count has a resolution of one bit
rather than ``k`` (``log2 k`` extra forward passes, no extra gradient).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from compendium import smoke
from compendium.progress import progress

LOSSES = ("ce", "mse")


def output_loss(kind: str) -> Callable[[Tensor, Tensor], Tensor]:
    """Per-batch mean loss on the network output: ``"ce"`` cross-entropy (on logits or on
    output firing rates), ``"mse"`` squared error of the output rates to the one-hot label
    (summed over classes, STBP's training loss)."""
    if kind not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")
    if kind == "ce":
        return F.cross_entropy

    def mse(out: Tensor, y: Tensor) -> Tensor:
        return ((out - F.one_hot(y, out.shape[1]).to(out.dtype)) ** 2).sum(1).mean()

    return mse


def per_sample(x: Tensor) -> Tensor:
    """``[T, B, ...]`` → ``[B, T·…]``: one row per sample (batch is dim 1 of spike tensors)."""
    return x.transpose(0, 1).flatten(1)


def all_zero(grad: Tensor) -> Tensor:
    """Per sample: is the gradient exactly zero everywhere (``[B]`` bool)?"""
    return per_sample(grad.abs()).amax(1) <= 1e-32


def g2s(grad: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Ternary perturbation ``sign(g) ⊙ Bernoulli(minmax(|g|))`` per sample (batch dim 1 of
    ``[T, B, ...]``). A sample whose gradient is constant in magnitude gets no flips."""
    mag = per_sample(grad.abs())
    lo, hi = mag.min(1, keepdim=True).values, mag.max(1, keepdim=True).values
    p = torch.where(hi > lo, (mag - lo) / (hi - lo).clamp_min(1e-45), torch.zeros_like(mag))
    mask = torch.bernoulli(p, generator=generator)
    p_shaped = mask.reshape(grad.shape[1], grad.shape[0], *grad.shape[2:]).transpose(0, 1)
    return torch.sign(grad) * p_shaped


def _topk_order(grad: Tensor, spikes: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per sample (rows of :func:`per_sample`): the sign of ``g``, the flat indices of the ``k``
    legal bits with the largest ``|g|`` (largest first) and which of them are real (``|g| > 0``)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    g, s = per_sample(grad), per_sample(spikes)
    gain = torch.where(((g > 0) & (s == 0)) | ((g < 0) & (s == 1)), g.abs(), torch.zeros_like(g))
    vals, idx = gain.topk(min(int(k), gain.shape[1]), dim=1)
    return torch.sign(g), idx, vals > 0


def _apply_prefix(shape: torch.Size, sign: Tensor, order: Tensor, valid: Tensor, count: Tensor | None) -> Tensor:
    """The ternary perturbation ``[T, B, ...]`` (``shape``) of the first ``count`` (per sample;
    all when ``None``) bits of ``order``."""
    keep = valid if count is None else valid & (torch.arange(order.shape[1], device=order.device) < count[:, None])
    mask = torch.zeros_like(sign).scatter_(1, order, keep.to(sign.dtype))
    return (sign * mask).reshape(shape[1], shape[0], *shape[2:]).transpose(0, 1)


def topk_flips(grad: Tensor, spikes: Tensor, k: int) -> Tensor:
    """Ternary perturbation flipping, per sample (batch dim 1 of ``[T, B, ...]``), the ``k``
    legal bits with the largest ``|g|``: ``+1`` on a 0 with ``g > 0``, ``-1`` on a 1 with
    ``g < 0``. Fewer than ``k`` when fewer bits have a legal, non-zero gradient; ``spikes +
    result`` stays binary."""
    sign, order, valid = _topk_order(grad, spikes, k)
    return _apply_prefix(grad.shape, sign, order, valid, None)


def rsf(spikes: Tensor, gamma: float, generator: torch.Generator | None = None) -> Tensor:
    """Flip each spike/no-spike with probability ``gamma`` (``S xor Bernoulli(γ)``)."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    mask = torch.bernoulli(torch.full_like(spikes, gamma), generator=generator)
    return (spikes - mask).abs()


@dataclass
class AttackResult:
    """Per-sample outcome of an attack on ``n`` samples.

    ``clean_correct``: the model classified the clean input right (only those are attacked);
    ``success``: fooled within the iterations (and budget); ``iterations``: steps used;
    ``flips``: changed input bits at the end; ``l2``: L2 norm of the perturbation of the
    time-averaged input (the rate image; the plain L2 norm for ``T = 1``);
    ``zero_grad_steps``: attack steps at which the sample's gradient was exactly zero."""

    clean_correct: np.ndarray
    success: np.ndarray
    iterations: np.ndarray
    flips: np.ndarray
    l2: np.ndarray
    zero_grad_steps: np.ndarray
    adversarial: Tensor | None = field(default=None, repr=False)

    @property
    def n_attacked(self) -> int:
        return int(self.clean_correct.sum())

    def success_rate(self, max_l2: float | None = None, max_flips: float | None = None) -> float:
        """Fraction of correctly classified samples fooled (within a perturbation budget)."""
        ok = self.success & self.clean_correct
        if max_l2 is not None:
            ok &= self.l2 <= max_l2
        if max_flips is not None:
            ok &= self.flips <= max_flips
        return float(ok.sum() / max(self.n_attacked, 1))

    def curve(self, budgets: np.ndarray, metric: str = "l2") -> np.ndarray:
        """Success rate at each budget (``metric`` ``"l2"`` or ``"flips"``)."""
        key = {"l2": "max_l2", "flips": "max_flips"}[metric]
        return np.array([self.success_rate(**{key: float(b)}) for b in budgets])

    def summary(self) -> dict[str, float]:
        won = self.success & self.clean_correct
        att = self.clean_correct
        return {"attacked": self.n_attacked, "success_rate": self.success_rate(),
                "median_l2": float(np.median(self.l2[won])) if won.any() else float("nan"),
                "mean_flips": float(self.flips[won].mean()) if won.any() else float("nan"),
                "zero_grad_fraction": float(self.zero_grad_steps[att].sum() / max(self.iterations[att].sum(), 1))}


def spike_attack(forward: Callable[[Tensor], Tensor], spikes: Tensor, labels: Tensor, *, loss: str = "ce",
                 iterations: int = 30, use_g2s: bool = True, use_rsf: bool = True, gamma: float = 0.05,
                 max_flips: int | None = None, topk: int | None = None, batch_size: int = 100, seed: int = 0,
                 keep: bool = False, desc: str = "spike attack", show_progress: bool = True) -> AttackResult:
    """Untargeted white-box attack on binary input spikes ``[T, N, ...]``.

    ``forward`` maps spikes ``[T, B, ...]`` to outputs ``[B, classes]`` (e.g.
    ``SpikingClassifier.forward_spikes``; for an ANN on a binary image, ``lambda s: ann(s[0])``
    with ``T = 1``). ``use_g2s`` / ``use_rsf`` switch the two parts off for the ablation
    (without G2S the raw gradient sign is applied to every element with non-zero gradient,
    the naive spike-incompatible step clipped back to {0, 1}). ``topk`` replaces the G2S step
    by :func:`topk_flips` with ``k = topk`` (RSF still acts on all-zero gradients when
    ``use_rsf``). ``max_flips`` stops a sample once it has changed more bits. ``keep``
    returns the adversarial spike tensors."""
    if spikes.ndim < 3 or spikes.shape[1] != labels.shape[0]:
        raise ValueError(f"spikes must be [T, N, ...] with N = len(labels); got {tuple(spikes.shape)} and {tuple(labels.shape)}")
    if not torch.all((spikes == 0) | (spikes == 1)):
        raise ValueError("spike_attack needs binary input spikes")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    loss_fn = output_loss(loss)
    gen = torch.Generator(device=spikes.device).manual_seed(seed)
    T, N = spikes.shape[:2]
    cols = {k: np.zeros(N, dtype=dt) for k, dt in (("clean_correct", bool), ("success", bool), ("iterations", int),
                                                      ("flips", float), ("l2", float), ("zero_grad_steps", int))}
    kept = spikes.clone() if keep else None
    for lo in progress(range(0, N, batch_size), desc=desc, enabled=show_progress):
        hi = min(lo + batch_size, N)
        s0, y = spikes[:, lo:hi].float(), labels[lo:hi]
        s = s0.clone()
        with torch.no_grad():
            correct = forward(s0).argmax(1) == y
        active = correct.clone()
        done = torch.zeros_like(correct)
        its = torch.zeros(len(y), dtype=torch.long, device=y.device)
        zero_steps = torch.zeros(len(y), dtype=torch.long, device=y.device)
        for it in range(smoke.limit(iterations)):  # smoke mode: two iterations
            idx = active.nonzero().squeeze(1)
            if len(idx) == 0:
                break
            x = s[:, idx].clone().requires_grad_(True)
            out = forward(x)
            fooled = out.argmax(1) != y[idx]
            # per-sample losses summed: each sample's gradient is its own loss's gradient
            grad, = torch.autograd.grad(loss_fn(out, y[idx]) * len(idx), x)
            grad = grad.detach()
            its[idx] += (~fooled).long()
            done[idx[fooled]] = True
            step_idx = idx[~fooled]
            g = grad[:, ~fooled]
            if len(step_idx) == 0:
                active[idx] = False
                break
            zero = all_zero(g)
            zero_steps[step_idx[zero]] += 1
            if not use_rsf and zero.any():
                # without RSF an all-zero gradient is a fixed point: the step changes nothing, so
                # every later step would see the same input and gradient. Book the remaining
                # steps as stuck ones now and stop the sample (the result is the same).
                stuck, rest = step_idx[zero], iterations - it - 1
                its[stuck] += rest
                zero_steps[stuck] += rest
                active[stuck] = False
            cur = s[:, step_idx]
            new = cur.clone()
            if topk is not None:
                sign, order, valid = _topk_order(g, cur, topk)
                new = cur + _apply_prefix(cur.shape, sign, order, valid, None)
                new = _shortest_fooling_prefix(forward, cur, new, y[step_idx], sign, order, valid)
            elif use_g2s:
                new = (cur + g2s(g, gen)).clamp(0, 1)
            else:
                new = (cur + torch.sign(g)).clamp(0, 1)
            if use_rsf and zero.any():
                new[:, zero] = rsf(cur[:, zero], gamma, gen)
            s[:, step_idx] = new
            if max_flips is not None:
                over = per_sample(s[:, step_idx] != s0[:, step_idx]).sum(1) > max_flips
                s[:, step_idx[over]] = cur[:, over]  # the step that broke the budget is undone; stop there
                active[step_idx[over]] = False
            active[idx[fooled]] = False
        if active.any():  # last check after the final step
            with torch.no_grad():
                idx = active.nonzero().squeeze(1)
                done[idx[forward(s[:, idx]).argmax(1) != y[idx]]] = True
        diff = s - s0
        cols["clean_correct"][lo:hi] = correct.cpu().numpy()
        cols["success"][lo:hi] = (done & correct).cpu().numpy()
        cols["iterations"][lo:hi] = its.cpu().numpy()
        cols["flips"][lo:hi] = per_sample(diff != 0).sum(1).cpu().numpy()
        cols["l2"][lo:hi] = diff.mean(0).flatten(1).norm(dim=1).cpu().numpy()
        cols["zero_grad_steps"][lo:hi] = zero_steps.cpu().numpy()
        if keep:
            kept[:, lo:hi] = s
    return AttackResult(**cols, adversarial=kept)


@torch.no_grad()
def _shortest_fooling_prefix(forward: Callable[[Tensor], Tensor], cur: Tensor, new: Tensor, y: Tensor, sign: Tensor,
                             order: Tensor, valid: Tensor) -> Tensor:
    """For the samples that the full top-k step ``new`` fools: binary search for the fewest of
    the step's flips (in ``order``) that still fool, keeping ``lo`` (not fooled) and ``hi``
    (fooled) prefix lengths as invariants. Returns ``new`` with those samples shortened."""
    hit = (forward(new).argmax(1) != y).nonzero().squeeze(1)
    if len(hit) == 0:
        return new
    c, sg, od, va, yy = cur[:, hit], sign[hit], order[hit], valid[hit], y[hit]
    lo = torch.zeros(len(hit), dtype=torch.long, device=y.device)
    hi = va.sum(1)
    while bool((hi - lo > 1).any()):
        open_ = hi - lo > 1
        mid = torch.where(open_, (lo + hi) // 2, hi)
        fooled = forward(c + _apply_prefix(c.shape, sg, od, va, mid)).argmax(1) != yy
        hi = torch.where(open_ & fooled, mid, hi)
        lo = torch.where(open_ & ~fooled, mid, lo)
    new = new.clone()
    new[:, hit] = c + _apply_prefix(c.shape, sg, od, va, hi)
    return new


def zero_gradient(forward: Callable[[Tensor], Tensor], spikes: Tensor, labels: Tensor, *, loss: str = "ce",
                  batch_size: int = 250) -> np.ndarray:
    """Per sample: is ``∂L/∂S`` exactly zero everywhere at the clean input ``[T, N, ...]``?
    (The vanishing-gradient state that RSF exists for; the paper's "trap" analysis is about
    how loss and penultimate threshold make it more or less common.)"""
    loss_fn = output_loss(loss)
    flags = []
    for lo in range(0, spikes.shape[1], batch_size):
        x = spikes[:, lo:lo + batch_size].float().clone().requires_grad_(True)
        y = labels[lo:lo + batch_size]
        grad, = torch.autograd.grad(loss_fn(forward(x), y) * len(y), x)
        flags.append(all_zero(grad).cpu().numpy())
    return np.concatenate(flags)
