"""An N-MNIST-like stand-in: static digits moved along three saccades and seen by the simulator.

N-MNIST (Orchard et al. 2015) recorded MNIST digits with an ATIS sensor on a pan-tilt unit
that made three saccades (a triangle). N-MNIST is not available offline, so chapters that
need an event version of MNIST build this stand-in and say so: the digit is translated
along a triangular path (sub-pixel, bilinear) and :func:`frames_to_events` turns the frame
sequence into ON/OFF frames. It has N-MNIST's structure (two polarities, edges that appear
where the digit moves), not its sensor noise or timing.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from compendium.events.simulator import frames_to_events


def saccade_frames(images: Tensor, T: int, amplitude: float = 2.0, pad: int = 3) -> Tensor:
    """``images [B, C, H, W]`` → frames ``[T+1, B, C, H+2·pad, W+2·pad]`` along a triangle of
    side ``amplitude`` pixels (three saccades, back to the start)."""
    if images.ndim != 4:
        raise ValueError(f"images must be [B, C, H, W], got shape {tuple(images.shape)}")
    if T < 3:
        raise ValueError(f"three saccades need T >= 3, got {T}")
    x = F.pad(images.float(), (pad, pad, pad, pad))
    B, _, H, W = x.shape
    corners = torch.tensor([[0.0, 0.0], [amplitude, 0.0], [amplitude / 2, amplitude * math.sqrt(3) / 2], [0.0, 0.0]])
    frames = []
    for s in torch.linspace(0, 3, T + 1):
        leg = min(int(s), 2)
        dx, dy = corners[leg] + (corners[leg + 1] - corners[leg]) * (s - leg)
        theta = torch.tensor([[1.0, 0.0, -2 * float(dx) / W], [0.0, 1.0, -2 * float(dy) / H]]).expand(B, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        frames.append(F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
    return torch.stack(frames)


def nmnist_like(images: Tensor, T: int = 8, *, threshold: float = 0.25, amplitude: float = 2.0, pad: int = 3,
                eps: float = 0.1, batch: int = 1024) -> Tensor:
    """Event frames ``[T, N, 2, H+2·pad, W+2·pad]`` (binary ON/OFF) for ``images [N, 1, H, W]``.

    Channels of a multi-channel image are summed to one intensity first."""
    parts = []
    for i in range(0, len(images), batch):
        frames = saccade_frames(images[i:i + batch], T, amplitude, pad).sum(2)  # [T+1, b, H', W']
        parts.append(frames_to_events(frames, threshold, eps=eps))  # [T, 2, b, H', W']
    return torch.cat(parts, 2).transpose(1, 2).contiguous()
