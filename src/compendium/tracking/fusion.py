"""Fusing the slow ANN and the fast SNN estimates.

Temporal complementary filter (TCF). DashNet's equations could not be read (research notes
[U]); this is the classical complementary filter that its name and the abstract describe
(our interpretation, labelled in the chapter): the ANN's absolute position, available only at
APS frames, is the low-frequency part; the SNN's bin-to-bin displacement the high-frequency part:

    between frames:   x̂[t] = x̂[t-1] + (s[t] - s[t-1])          (s: SNN position estimates)
    at an APS frame:  x̂[t] ← (1 - κ) · x̂[t] + κ · a[t]           (a: ANN position)

With ``κ = 1`` and a motionless SNN, x̂ is the ANN estimate held between frames; with
``κ = 0`` it is the SNN's trajectory anchored at the first ANN estimate.

Attention: the SNN's response map is multiplied by a Gaussian window around the current fused
estimate (``σ`` pixels), so that clutter and occluder events far from the target cannot move
its estimate (again our interpretation of the paper's attention module).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def tcf(ann: np.ndarray, snn: np.ndarray, aps_every: int, kappa: float = 0.8) -> np.ndarray:
    """Fused positions ``[N, 2]`` from ANN positions at renders ``0, aps_every, ...`` (``ann``
    ``[N_aps, 2]``) and SNN positions at every step (``snn`` ``[N, 2]``)."""
    if not 0.0 <= kappa <= 1.0:
        raise ValueError(f"kappa must be in [0, 1], got {kappa}")
    out = np.empty_like(snn, dtype=np.float64)
    out[0] = ann[0]
    for t in range(1, len(snn)):
        out[t] = out[t - 1] + (snn[t] - snn[t - 1])
        if t % aps_every == 0 and t // aps_every < len(ann):
            out[t] = (1 - kappa) * out[t] + kappa * ann[t // aps_every]
    return out


def attention_gate(response: Tensor, center: Tensor, sigma: float, stride: int) -> Tensor:
    """``response [B, h, w]`` (on a grid of ``stride`` pixels) times a Gaussian around
    ``center [B, 2]`` (pixels, (x, y))."""
    B, h, w = response.shape
    ys = (torch.arange(h, dtype=response.dtype) + 0.5) * stride
    xs = (torch.arange(w, dtype=response.dtype) + 0.5) * stride
    d2 = (xs.view(1, 1, w) - center[:, 0].view(B, 1, 1)) ** 2 + (ys.view(1, h, 1) - center[:, 1].view(B, 1, 1)) ** 2
    return response * torch.exp(-d2 / (2 * sigma ** 2))
