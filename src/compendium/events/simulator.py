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
    # without a refractory period every pixel is always active: the mask and its countdown are
    # skipped (multiplying by an all-ones mask changes no value)
    quiet = torch.zeros_like(ref) if refractory > 0 else None  # sub-steps left in each pixel's refractory period
    n_steps = frames.shape[0] - 1
    out = torch.zeros(n_steps, 2, *frames.shape[1:])
    if noise > 0:
        # all the draws at once, in the order the steps would draw them (step, sub-step, then the
        # spurious and the polarity draw): the generator yields the same numbers, one call instead of 2·N·substeps.
        # They are held for the whole call: 2·substeps floats per pixel and frame (plus their masks)
        draws = torch.rand((n_steps, substeps, 2, *ref.shape), generator=generator)
        spurious = draws[:, :, 0] < noise
        up = draws[:, :, 1] < 0.5
        spurious_on, spurious_off = spurious & up, spurious & ~up
    for n in range(n_steps):
        for s in range(1, substeps + 1):
            level = log[n] + (log[n + 1] - log[n]) * (s / substeps)
            on = torch.floor((level - ref) / threshold).clamp_min_(0)
            off = torch.floor((ref - level) / threshold).clamp_min_(0)
            if quiet is not None:
                active = quiet <= 0
                on.mul_(active)
                off.mul_(active)
            ref = ref + (on - off) * threshold
            if noise > 0:
                on.add_(spurious_on[n, s - 1])
                off.add_(spurious_off[n, s - 1])
            if quiet is not None:
                fired = (on + off) > 0
                quiet = torch.where(fired, torch.full_like(quiet, float(refractory)), quiet - 1)
            out[n, 0] += on
            out[n, 1] += off
    return out if counts else (out > 0).float()
