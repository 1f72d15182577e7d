"""Frame-to-event simulator: what a dynamic vision sensor would report for a frame sequence.

A DVS pixel fires an ON (OFF) event when its log intensity has risen (fallen) by a contrast
threshold ``C`` since the pixel's last event (its reference level). This is the rule the
DashNet / hybrid-sensing-network maintainers describe ("the temporal difference of the log
amplitude of two adjacent APS frames passed through a threshold", IbrahimYang/Hybrid-neural-
networks issue #6), kept here with a per-pixel reference level as in ESIM/v2e so that slow
changes accumulate into events instead of being lost between frames:

    L_s = log(I_s + eps)                                   (s: frames, or sub-frames)
    n_on  = floor((L_s - ref) / C)   if L_s - ref >=  C    → ref += n_on · C
    n_off = floor((ref - L_s) / C)   if ref - L_s >=  C    → ref -= n_off · C

``substeps`` interpolates ``L`` linearly between consecutive frames (events at a finer
time resolution than the frame rate, binned back per frame interval); ``refractory`` drops
a pixel's events for that many sub-steps after it fired (its reference is left untouched,
so the change is reported when the pixel recovers); ``noise`` adds spurious events of random
polarity with that probability per pixel and sub-step. The DashNet constants are not known
(research notes: [U]); every one of these is a parameter.
"""

from __future__ import annotations

import torch
from torch import Tensor


def frames_to_events(frames: Tensor, threshold: float = 0.2, *, eps: float = 1e-2, substeps: int = 1,
                     refractory: int = 0, noise: float = 0.0, counts: bool = False,
                     generator: torch.Generator | None = None) -> Tensor:
    """Events between consecutive frames.

    ``frames``: intensities ``[N+1, *S]`` (``S`` any pixel shape, e.g. ``[B, H, W]``), >= 0.
    Returns ``[N, 2, *S]``: channel 0 ON, channel 1 OFF, per frame interval; binary (any
    event in the interval) unless ``counts``.
    """
    if frames.ndim < 2 or frames.shape[0] < 2:
        raise ValueError(f"frames must be [N+1 >= 2, ...], got shape {tuple(frames.shape)}")
    if threshold <= 0:
        raise ValueError(f"the contrast threshold must be > 0, got {threshold}")
    if substeps < 1 or refractory < 0 or not 0.0 <= noise <= 1.0:
        raise ValueError("substeps must be >= 1, refractory >= 0 and noise in [0, 1]")
    if (frames < 0).any():
        raise ValueError("intensities must be non-negative")
    log = torch.log(frames.float() + eps)
    ref = log[0].clone()
    quiet = torch.zeros_like(ref)  # sub-steps left in each pixel's refractory period
    out = torch.zeros(frames.shape[0] - 1, 2, *frames.shape[1:])
    for n in range(frames.shape[0] - 1):
        for s in range(1, substeps + 1):
            level = log[n] + (log[n + 1] - log[n]) * (s / substeps)
            active = quiet <= 0
            on = torch.floor((level - ref) / threshold).clamp_min(0) * active
            off = torch.floor((ref - level) / threshold).clamp_min(0) * active
            ref = ref + (on - off) * threshold
            if noise > 0:
                spurious = torch.rand(ref.shape, generator=generator) < noise
                up = torch.rand(ref.shape, generator=generator) < 0.5
                on = on + (spurious & up)
                off = off + (spurious & ~up)
            fired = (on + off) > 0
            quiet = torch.where(fired, torch.full_like(quiet, float(refractory)), quiet - 1)
            out[n, 0] += on
            out[n, 1] += off
    return out if counts else (out > 0).float()
