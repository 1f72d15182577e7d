"""The two branches. Both output a response map on a grid of stride 4 whose softmax locates the
target; a soft-argmax turns it into a position in pixels.

- ANN branch (frames): conv 3×3 /2 → ReLU → conv 3×3 /2 → ReLU → conv 3×3 → response.
- SNN branch (events): the same layers with LIF neurons, run over event bins (one bin per time
  step, membranes carried from bin to bin), the last conv's current read out at every bin.

Small stand-ins for DashNet's branches, whose architectures could not be read (research
notes [U]); the successor HSN code correlates an ANN template with SNN features instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compendium.spiking.layers import SeqFold
from compendium.spiking.neuron import LIF

STRIDE = 4


def _layers(c_in: int, width: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, width, 3, stride=2, padding=1), nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.Conv2d(2 * width, 1, 3, padding=1)]


class FrameNet(nn.Module):
    def __init__(self, width: int = 16):
        super().__init__()
        a, b, c = _layers(1, width)
        self.net = nn.Sequential(a, nn.ReLU(), b, nn.ReLU(), c)

    def forward(self, frames: Tensor) -> Tensor:
        """``[B, H, W]`` → response ``[B, H/4, W/4]``."""
        return self.net(frames.unsqueeze(1)).squeeze(1)


class EventNet(nn.Module):
    def __init__(self, width: int = 16, decay: float = 0.5, threshold: float = 0.5):
        super().__init__()
        a, b, c = _layers(2, width)
        lif = dict(decay=decay, threshold=threshold, step_mode="multi")
        self.net = nn.Sequential(SeqFold(a), LIF(**lif), SeqFold(b), LIF(**lif), SeqFold(c))

    def forward(self, events: Tensor) -> Tensor:
        """``[T, B, 2, H, W]`` → responses ``[T, B, H/4, W/4]``."""
        return self.net(events).squeeze(2)


def cell_targets(centers: Tensor, h: int, w: int) -> Tensor:
    """Index of the grid cell holding each centre ``[..., 2]`` (pixels)."""
    cx = (centers[..., 0] / STRIDE).floor().clamp(0, w - 1)
    cy = (centers[..., 1] / STRIDE).floor().clamp(0, h - 1)
    return (cy * w + cx).long()


def soft_argmax(response: Tensor, temperature: float = 1.0) -> Tensor:
    """Expected position (pixels, (x, y)) under the softmax of ``response [..., h, w]``."""
    h, w = response.shape[-2:]
    p = F.softmax(response.flatten(-2) / temperature, -1).view(response.shape)
    xs = (torch.arange(w, dtype=response.dtype, device=response.device) + 0.5) * STRIDE
    ys = (torch.arange(h, dtype=response.dtype, device=response.device) + 0.5) * STRIDE
    return torch.stack([(p.sum(-2) * xs).sum(-1), (p.sum(-1) * ys).sum(-1)], -1)


def response_loss(response: Tensor, centers: Tensor) -> Tensor:
    """Cross-entropy of the response's softmax against the target's cell."""
    h, w = response.shape[-2:]
    return F.cross_entropy(response.reshape(-1, h * w), cell_targets(centers, h, w).reshape(-1))
