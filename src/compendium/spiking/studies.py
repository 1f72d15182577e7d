"""Depth and normalisation studies of spiking ResNets (the tdBN and MS-ResNet chapters).

Both chapters ask how a design choice (the normalisation; the shortcut) behaves as networks
get deeper. These functions build the variants, give each one an initialisation under
which it can learn (checked by its firing rates at initialisation), train them through
:func:`compendium.learning.compare_tuned` with the same tuning budget, and record, during
training, the gradient norm at every residual block (block dynamical isometry, Zheng et al.
2021) and the firing of every LIF layer.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compendium.spiking.init import firing_rates, frozen_buffers, threshold_scaled_init
from compendium.spiking.probes import gradient_flow
from compendium.spiking.resnet import SpikingResNet, small_layout


def downsample(images: Tensor, factor: int) -> Tensor:
    """Average-pool ``[N, C, H, W]`` images by ``factor`` (1: unchanged); a cheaper input for depth studies."""
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    return images if factor == 1 else F.avg_pool2d(images, factor)


def blocks_for_depth(depth: int) -> int:
    """Blocks per stage of the 6n+2-layer CIFAR-style ResNet of ``depth`` layers."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth {depth}: the small ResNets have 6n+2 layers (8, 14, 20, 26, 32, 38, 44, 50, ...)")
    return (depth - 2) // 6


def resnet_builder(depth: int, width: int, *, T: int, in_channels: int, lif: Mapping[str, Any], norm: str = "tdbn",
                   block: str = "standard", init_x: Tensor | None = None) -> Callable[[], SpikingResNet]:
    """A builder of fresh ``depth``-layer spiking ResNets. Un-normalised nets (``norm="none"``) get
    :func:`~compendium.spiking.init.threshold_scaled_init` on ``init_x`` (without it they do not
    fire at initialisation and cannot learn); normalised nets keep PyTorch's standard init."""
    n = blocks_for_depth(depth)

    def build() -> SpikingResNet:
        net = SpikingResNet(small_layout(n, width), T=T, in_channels=in_channels, norm=norm, block=block, lif=dict(lif))
        if norm == "none" and init_x is not None:
            threshold_scaled_init(net, init_x, float(lif["threshold"]))
        return net

    return build


def init_firing_table(builders: Mapping[str, Callable[[], nn.Module]], x: Tensor, seed: int = 0):
    """Per variant: min / mean / max firing rate over its LIF layers at initialisation, and the
    fraction of LIF layers that emit any spike (a variant with a silent layer cannot learn)."""
    import pandas as pd

    rows = []
    for name, build in builders.items():
        torch.manual_seed(seed)
        rates = firing_rates(build(), x)
        rows.append({"variant": name, "LIF layers": len(rates), "min rate": min(rates), "mean rate": sum(rates) / len(rates),
                     "max rate": max(rates), "layers firing": sum(r > 0 for r in rates) / len(rates)})
    return pd.DataFrame(rows).set_index("variant")


def isometry_probe(x: Tensor, y: Tensor) -> Callable[[nn.Module, int], dict[str, Any]]:
    """A probe for :func:`compendium.learning.compare_tuned`: at each epoch, the per-block gradient
    norms ``‖∂L/∂ block output‖`` on one fixed batch, their mean |log10 ratio| between consecutive
    blocks (0 = perfect isometry), and the per-block firing rates. BN statistics are untouched."""

    def probe(model: nn.Module, epoch: int) -> dict[str, Any]:
        with frozen_buffers(model):
            gf = gradient_flow(model, list(model.blocks), x, y)
        model.zero_grad(set_to_none=True)
        return {"grad_norms": gf.grad_norms, "firing_rates": gf.firing_rates,
                "mean_abs_log_ratio": gf.mean_abs_log_ratio, "first_block_grad": gf.grad_norms[0]}

    return probe
