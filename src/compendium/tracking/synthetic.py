"""A synthetic high-speed tracking benchmark (stand-in for NFS-DAVIS and PRED18, which are not
available offline).

Each sequence renders, at a high rate (the "1 kHz" clock of the event stream), a textured disk
moving fast along a smooth random curve over a textured background, optionally passing under a
static occluding bar. Every ``aps_every``-th render is an APS frame (the slow, accurate camera);
the event stream comes from :func:`compendium.events.frames_to_events` between consecutive
renders. Ground-truth boxes are exact (centre and the disk's bounding box).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from compendium.events import frames_to_events


@dataclass
class Sequence:
    frames: Tensor  # [N+1, H, W] high-rate renders in [0, 1]
    events: Tensor  # [N, 2, H, W] binary ON/OFF frames between renders
    centers: Tensor  # [N+1, 2] (x, y) in pixels
    radius: float
    aps_every: int

    @property
    def aps_index(self) -> np.ndarray:
        """Render indices of the APS frames."""
        return np.arange(0, self.frames.shape[0], self.aps_every)

    def boxes(self) -> Tensor:
        """``[N+1, 4]`` boxes ``(x0, y0, w, h)``."""
        r = self.radius
        return torch.cat([self.centers - r, torch.full_like(self.centers, 2 * r)], 1)


def _texture(rng: np.random.Generator, size: int, scale: int) -> np.ndarray:
    coarse = rng.random((size // scale + 2, size // scale + 2))
    return np.kron(coarse, np.ones((scale, scale)))[:size, :size]


def render_sequence(n: int = 200, size: int = 64, *, speed: float = 1.5, radius: float = 5.0, clutter: float = 0.3,
                    occlusion: bool = False, aps_every: int = 10, threshold: float = 0.15, noise: float = 0.0,
                    seed: int = 0) -> Sequence:
    """One sequence of ``n`` event bins (``n + 1`` renders); ``speed`` in pixels per render.

    The target moves at constant ``speed`` along a smoothly turning heading and bounces off
    the border (kept ``radius + 2`` pixels inside); ``clutter`` is the background texture
    contrast; ``occlusion`` adds a static dark bar across the middle; ``noise`` is the
    simulator's rate of spurious events per pixel and bin (sensor noise: a static textured
    background emits no events of its own)."""
    if n < aps_every or size < 16:
        raise ValueError("need n >= aps_every and size >= 16")
    rng = np.random.default_rng(seed)
    # constant speed along a smoothly turning heading, reflected at the borders
    t = np.arange(n + 1, dtype=np.float64)
    turn = sum(rng.uniform(0.02, 0.08) * np.sin(rng.uniform(0.01, 0.05) * t + rng.uniform(0, 2 * np.pi)) for _ in range(2))
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(turn)
    lo, hi = radius + 2, size - radius - 3
    path = np.empty((n + 1, 2))
    pos = rng.uniform(lo, hi, 2)
    direction = np.array([1.0, 1.0])
    for i in range(n + 1):
        path[i] = pos
        step = direction * speed * np.array([np.cos(heading[i]), np.sin(heading[i])])
        pos = pos + step
        for k in range(2):  # reflect
            if pos[k] < lo or pos[k] > hi:
                direction[k] = -direction[k]
                pos[k] = 2 * lo - pos[k] if pos[k] < lo else 2 * hi - pos[k]
    background = 0.4 + clutter * (_texture(rng, size, 4) - 0.5)
    obj_tex = 0.75 + 0.25 * _texture(rng, int(2 * radius) + 4, 2)
    yy, xx = np.mgrid[0:size, 0:size]
    cx, cy = path[:, 0, None, None], path[:, 1, None, None]  # all renders at once
    mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius ** 2
    ox = np.clip((xx - cx + radius + 2).astype(int), 0, obj_tex.shape[1] - 1)
    oy = np.clip((yy - cy + radius + 2).astype(int), 0, obj_tex.shape[0] - 1)
    frames = np.where(mask, obj_tex[oy, ox], background[None]).astype(np.float32)
    if occlusion:
        frames[:, size // 2 - 3: size // 2 + 3, :] = 0.1
    frames_t = torch.from_numpy(frames)
    events = frames_to_events(frames_t, threshold, noise=noise,
                              generator=torch.Generator().manual_seed(seed))  # [n, 2, H, W]
    return Sequence(frames_t, events, torch.from_numpy(path.astype(np.float32)), radius, aps_every)


def make_sequences(count: int, n: int = 200, size: int = 64, *, speed: tuple[float, float] = (1.0, 2.5),
                   radius: tuple[float, float] = (4.0, 7.0), clutter: tuple[float, float] = (0.1, 0.5),
                   occlusion_rate: float = 0.3, aps_every: int = 10, threshold: float = 0.15, noise: float = 0.0,
                   seed: int = 0) -> list[Sequence]:
    """``count`` sequences with speed, size, clutter and occlusion drawn per sequence."""
    rng = np.random.default_rng(seed)
    return [render_sequence(n, size, speed=float(rng.uniform(*speed)), radius=float(rng.uniform(*radius)),
                            clutter=float(rng.uniform(*clutter)), occlusion=bool(rng.random() < occlusion_rate),
                            aps_every=aps_every, threshold=threshold, noise=noise, seed=int(rng.integers(2**31)))
            for _ in range(count)]
