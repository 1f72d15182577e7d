"""Input encoders: analog samples ``[B, ...]`` to spike-time tensors ``[T, B, ...]``.

- :func:`direct` — the same analog input at every step (the first layer then does MACs);
- :func:`rate` — Bernoulli rate coding, ``o[t] ~ Bernoulli(clip(x, 0, 1))`` independently per
  step (STBP's encoding: ``x > rand``);
- :func:`events_to_frames` — an event stream ``(t, x, y, polarity)`` binned into
  ``[T, 2, H, W]`` ON/OFF frames.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def direct(x: Tensor, T: int) -> Tensor:
    """``x`` repeated over ``T`` steps (a view; no copy)."""
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    return x.unsqueeze(0).expand(T, *x.shape)


def rate(x: Tensor, T: int, generator: torch.Generator | None = None) -> Tensor:
    """Bernoulli spikes with per-step firing probability ``clip(x, 0, 1)``:
    ``o[t] = 1[U_t < clip(x, 0, 1)]`` with ``U_t`` uniform on [0, 1), STBP's ``x > rand``.

    Drawn as ``torch.rand`` and a comparison, which on a CPU is four to five times faster than
    ``torch.bernoulli`` with a probability tensor (that draw was a third to a half of an MLP
    SNN's training step); the distribution is the same. The spikes carry no gradient."""
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    u = torch.rand((T, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
    # the comparison written into the draws (1.0 / 0.0 in x's dtype): no boolean tensor and
    # conversion pass; detached, as a comparison passes no gradient to x
    return u.lt_(x.detach().clamp(0, 1))


def events_to_frames(events: np.ndarray | Tensor, T: int, height: int, width: int,
                     t_range: tuple[float, float] | None = None, binary: bool = True) -> Tensor:
    """Bin events, rows ``(t, x, y, p)`` with ``p`` in {0, 1} (OFF, ON), into ``[T, 2, H, W]``.

    Time bins split ``t_range`` (default: the events' own span) into ``T`` equal parts;
    ``binary`` keeps 1 where a pixel had any event in a bin, else the event count."""
    ev = torch.as_tensor(np.asarray(events), dtype=torch.float64)
    frames = torch.zeros(T, 2, height, width)
    if ev.numel() == 0:
        return frames
    if ev.ndim != 2 or ev.shape[1] != 4:
        raise ValueError(f"events must have shape [N, 4] (t, x, y, p), got {tuple(ev.shape)}")
    t0, t1 = t_range if t_range is not None else (float(ev[:, 0].min()), float(ev[:, 0].max()))
    span = max(t1 - t0, 1e-12)
    b = ((ev[:, 0] - t0) / span * T).floor().clamp(0, T - 1).long()
    x, y, p = ev[:, 1].long(), ev[:, 2].long(), ev[:, 3].long()
    if (x < 0).any() or (x >= width).any() or (y < 0).any() or (y >= height).any() or ((p != 0) & (p != 1)).any():
        raise ValueError("event coordinates out of range or polarity not in {0, 1}")
    frames.index_put_((b, p, y, x), torch.ones(len(b)), accumulate=True)
    return (frames > 0).float() if binary else frames
