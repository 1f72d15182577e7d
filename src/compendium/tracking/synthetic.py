"""A synthetic high-speed tracking benchmark (stand-in for NFS-DAVIS and PRED18, which are not
available offline).

Each sequence renders, at a high rate (the "1 kHz" clock of the event stream), a textured disk
moving along a smooth random curve over a textured background, optionally passing under a
static occluding bar. The event stream comes from :func:`compendium.events.frames_to_events`
between consecutive renders. Every ``aps_every``-th render is an APS frame (the slow, accurate
camera), read out after an exposure of ``exposure`` renders: the APS frame at render ``k`` is
the mean of renders ``k - exposure + 1 .. k``, so a fast target is smeared into a streak.
Ground-truth boxes are exact (centre and the disk's bounding box).

Three *conditions* (:func:`conditions`, our interpretation of the setting the paper's hybrid
is meant for, not the paper's data) give each branch a failure mode the other covers:

``fast``
    a fast target over a static background. Frames fail: the held APS estimate is up to
    ``aps_every`` renders out of date and the frame itself is blurred; events, which a static
    background does not emit, follow the target at every bin.
``stop-and-go``
    a slow target that stops for long stretches. Events fail: a still target emits none, so the
    event branch has nothing to locate; frames see it, and the held estimate is nearly current.
``camera pan``
    a slow target while the camera pans over a strongly textured background. Events fail: every
    background edge fires, so events are dense everywhere; frames still show the target's
    appearance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from compendium import smoke
from compendium.events import frames_to_events


@dataclass
class Sequence:
    frames: Tensor  # [N+1, H, W] high-rate renders in [0, 1]
    events: Tensor  # [N, 2, H, W] binary ON/OFF frames between renders
    centers: Tensor  # [N+1, 2] (x, y) in pixels
    radius: float
    aps_every: int
    exposed: Tensor | None = None  # [N+1, H, W] what the APS camera would read out at each render (None: = frames)
    condition: str = ""

    @property
    def aps_index(self) -> np.ndarray:
        """Render indices of the APS frames."""
        return np.arange(0, self.frames.shape[0], self.aps_every)

    @property
    def camera(self) -> Tensor:
        """The APS camera's readout at every render (``frames`` when the exposure is one render)."""
        return self.frames if self.exposed is None else self.exposed

    def aps_frames(self) -> Tensor:
        """``[N_aps, H, W]``: the APS frames, as the camera reads them out (blurred by the exposure)."""
        return self.camera[self.aps_index]

    def boxes(self) -> Tensor:
        """``[N+1, 4]`` boxes ``(x0, y0, w, h)``."""
        r = self.radius
        return torch.cat([self.centers - r, torch.full_like(self.centers, 2 * r)], 1)


@dataclass(frozen=True)
class Condition:
    """Ranges from which a sequence of one condition draws its parameters (uniform)."""

    name: str
    speed: tuple[float, float]  # target speed while moving, pixels per render
    stops: bool = False  # stop-and-go: alternate moving and still stretches
    camera_speed: tuple[float, float] = (0.0, 0.0)  # background pan, pixels per render
    clutter: tuple[float, float] = (0.1, 0.5)  # background texture contrast


def conditions(fast_speed: float = 3.0, slow_speed: float = 1.0, camera_speed: float = 2.0) -> tuple[Condition, ...]:
    """The benchmark's three conditions (module docstring). Each speed is the upper end of its
    range: fast targets draw from ``[0.6, 1]·fast_speed``, slow ones from ``[0.3, 1]·slow_speed``,
    the pan from ``[0.5, 1]·camera_speed``; the pan is over a strongly textured background."""
    return (Condition("fast", (0.6 * fast_speed, fast_speed)),
            Condition("stop-and-go", (0.3 * slow_speed, slow_speed), stops=True),
            Condition("camera pan", (0.3 * slow_speed, slow_speed), camera_speed=(0.5 * camera_speed, camera_speed),
                      clutter=(0.3, 0.5)))


def _texture(rng: np.random.Generator, size: int, scale: int) -> np.ndarray:
    coarse = rng.random((size // scale + 2, size // scale + 2))
    return np.kron(coarse, np.ones((scale, scale)))[:size, :size]


def stop_and_go(n: int, speed: float, rng: np.random.Generator, *, move: tuple[int, int] = (10, 40),
                still: tuple[int, int] = (20, 60)) -> np.ndarray:
    """Per-render speeds ``[n + 1]``: stretches at ``speed`` alternating with stretches at 0,
    their lengths uniform in ``move`` and ``still`` renders; the first stretch is either."""
    out = np.empty(n + 1)
    i, moving = 0, bool(rng.random() < 0.5)
    while i <= n:
        lo, hi = move if moving else still
        k = int(rng.integers(lo, hi + 1))
        out[i:i + k] = speed if moving else 0.0
        i, moving = i + k, not moving
    return out


def exposure_frames(frames: Tensor, exposure: int) -> Tensor:
    """``frames [N+1, H, W]`` → the readout of a camera exposing over the last ``exposure``
    renders at every render: ``E[k] = mean(frames[max(0, k-exposure+1) .. k])``."""
    if exposure < 1:
        raise ValueError(f"exposure must be >= 1 render, got {exposure}")
    if exposure == 1:
        return frames
    c = torch.cumsum(frames.double(), 0)
    c = torch.cat([torch.zeros_like(c[:1]), c])
    k = torch.arange(frames.shape[0])
    lo = (k - exposure + 1).clamp_min(0)
    return ((c[1:] - c[lo]) / (k + 1 - lo).view(-1, 1, 1)).to(frames.dtype)  # c[1:] is c[k + 1], without a gather


def _heading(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n + 1, dtype=np.float64)
    turn = sum(rng.uniform(0.02, 0.08) * np.sin(rng.uniform(0.01, 0.05) * t + rng.uniform(0, 2 * np.pi)) for _ in range(2))
    return rng.uniform(0, 2 * np.pi) + np.cumsum(turn)


def render_sequence(n: int = 200, size: int = 64, *, speed: float | np.ndarray = 1.5, radius: float = 5.0,
                    clutter: float = 0.3, occlusion: bool = False, aps_every: int = 10, threshold: float = 0.15,
                    noise: float = 0.0, camera_speed: float = 0.0, exposure: int = 1, condition: str = "",
                    seed: int = 0) -> Sequence:
    """One sequence of ``n`` event bins (``n + 1`` renders); ``speed`` in pixels per render, a
    number or one value per render (``[n + 1]``, e.g. from :func:`stop_and_go`).

    The target moves at ``speed`` along a smoothly turning heading and bounces off the border
    (kept ``radius + 2`` pixels inside); ``clutter`` is the background texture contrast;
    ``occlusion`` adds a static dark bar across the middle; ``noise`` is the simulator's rate of
    spurious events per pixel and bin (sensor noise: a static textured background emits no
    events of its own). ``camera_speed`` pans the background (a periodic texture, shifted by
    whole pixels along its own smoothly turning heading), so that its edges fire events;
    ``exposure`` is the APS camera's exposure in renders (:func:`exposure_frames`)."""
    if n < aps_every or size < 16:
        raise ValueError("need n >= aps_every and size >= 16")
    rng = np.random.default_rng(seed)
    speeds = np.broadcast_to(np.asarray(speed, dtype=np.float64), (n + 1,))
    heading = _heading(rng, n)
    lo, hi = radius + 2, size - radius - 3
    path = np.empty((n + 1, 2))
    pos = rng.uniform(lo, hi, 2)
    direction = np.array([1.0, 1.0])
    for i in range(n + 1):
        path[i] = pos
        step = direction * speeds[i] * np.array([np.cos(heading[i]), np.sin(heading[i])])
        pos = pos + step
        for k in range(2):  # reflect
            if pos[k] < lo or pos[k] > hi:
                direction[k] = -direction[k]
                pos[k] = 2 * lo - pos[k] if pos[k] < lo else 2 * hi - pos[k]
    background = 0.4 + clutter * (_texture(rng, size, 4) - 0.5)
    obj_tex = 0.75 + 0.25 * _texture(rng, int(2 * radius) + 4, 2)
    yy, xx = np.mgrid[0:size, 0:size]
    if camera_speed > 0:  # the background moves by the camera's (rounded) offset; the texture tiles seamlessly
        cam = _heading(rng, n)
        offset = np.round(np.cumsum(camera_speed * np.stack([np.cos(cam), np.sin(cam)], 1), 0)).astype(int)
        offset -= offset[0]
        bg = background[(yy[None] - offset[:, 1, None, None]) % size, (xx[None] - offset[:, 0, None, None]) % size]
    else:
        bg = background[None]
    cx, cy = path[:, 0, None, None], path[:, 1, None, None]  # all renders at once
    mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius ** 2
    ox = np.clip((xx - cx + radius + 2).astype(int), 0, obj_tex.shape[1] - 1)
    oy = np.clip((yy - cy + radius + 2).astype(int), 0, obj_tex.shape[0] - 1)
    frames = np.where(mask, obj_tex[oy, ox], bg).astype(np.float32)
    if occlusion:
        frames[:, size // 2 - 3: size // 2 + 3, :] = 0.1
    frames_t = torch.from_numpy(frames)
    events = frames_to_events(frames_t, threshold, noise=noise,
                              generator=torch.Generator().manual_seed(seed))  # [n, 2, H, W]
    exposed = None if exposure == 1 else exposure_frames(frames_t, exposure)
    return Sequence(frames_t, events, torch.from_numpy(path.astype(np.float32)), radius, aps_every, exposed, condition)


def make_sequences(count: int, n: int = 200, size: int = 64, *, speed: tuple[float, float] = (1.0, 2.5),
                   radius: tuple[float, float] = (4.0, 7.0), clutter: tuple[float, float] = (0.1, 0.5),
                   occlusion_rate: float = 0.3, aps_every: int = 10, threshold: float = 0.15, noise: float = 0.0,
                   stops: bool = False, camera_speed: tuple[float, float] = (0.0, 0.0), exposure: int = 1,
                   condition: str = "", seed: int = 0) -> list[Sequence]:
    """``count`` sequences with speed, size, clutter, occlusion (and camera speed) drawn per
    sequence; with ``stops`` the target alternates moving at its speed and standing still."""
    if smoke.active():  # one sequence, 60 event bins (the quick profile's length), at the real image size
        count, n = smoke.limit(count, 1), smoke.limit(n, 60)
        smoke.unscaled("synthetic tracking sequences")
        smoke.note(f"tracking: sequences cut to one per call and {n} event bins, images {size}x{size} as asked")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        v, r = float(rng.uniform(*speed)), float(rng.uniform(*radius))
        c, occ = float(rng.uniform(*clutter)), bool(rng.random() < occlusion_rate)
        cam, s = float(rng.uniform(*camera_speed)), int(rng.integers(2**31))
        profile = stop_and_go(n, v, np.random.default_rng(s + 1)) if stops else v
        out.append(render_sequence(n, size, speed=profile, radius=r, clutter=c, occlusion=occ, aps_every=aps_every,
                                   threshold=threshold, noise=noise, camera_speed=cam, exposure=exposure,
                                   condition=condition, seed=s))
    return out


def make_benchmark(per_condition: int, n: int = 200, size: int = 64, *, conds: tuple[Condition, ...] | None = None,
                   seed: int = 0, **kwargs) -> list[Sequence]:
    """``per_condition`` sequences of each condition (default :func:`conditions`), in condition
    order; ``kwargs`` go to :func:`make_sequences` (``aps_every``, ``threshold``, ``noise``,
    ``exposure``, ``occlusion_rate``, ``radius``). Condition ``i`` draws from seed ``seed + i``."""
    out: list[Sequence] = []
    for i, c in enumerate(conditions() if conds is None else conds):
        out += make_sequences(per_condition, n, size, speed=c.speed, clutter=c.clutter, stops=c.stops,
                              camera_speed=c.camera_speed, condition=c.name, seed=seed + i, **kwargs)
    return out
