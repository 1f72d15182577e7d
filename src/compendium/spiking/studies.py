"""Depth and normalisation studies of spiking ResNets (the tdBN and MS-ResNet chapters).

Both chapters ask how a design choice (the normalisation; the shortcut) behaves as networks
get deeper. These functions build the variants, give each one an initialisation under
which it can learn (checked by its firing rates at initialisation), train them through
:func:`compendium.learning.compare_tuned` with the same tuning budget, and record, during
training, the gradient norm at every residual block (block dynamical isometry, Zheng et al.
2021) and the firing of every LIF layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compendium import smoke
from compendium.learning.tuning import TunedComparison, TunedRun, compare_tuned
from compendium.spiking.init import firing_rates, frozen_buffers, threshold_scaled_init
from compendium.spiking.probes import gradient_flow
from compendium.spiking.resnet import ResNetLayout, SpikingResNet, small_layout


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


def resnet_builder(depth: int | None, width: int, *, T: int, in_channels: int, lif: Mapping[str, Any],
                   norm: str = "tdbn", block: str = "standard", init_x: Tensor | None = None,
                   layout: ResNetLayout | None = None) -> Callable[[], SpikingResNet]:
    """A builder of fresh spiking ResNets: the ``depth``-layer 6n+2 CIFAR-style net of ``width``,
    or a given ``layout`` (e.g. ResNet-19). Un-normalised nets (``norm="none"``) get
    :func:`~compendium.spiking.init.threshold_scaled_init` on ``init_x`` (without it they do not
    fire at initialisation and cannot learn); normalised nets keep PyTorch's standard init."""
    lay = layout if layout is not None else small_layout(blocks_for_depth(int(depth)), width)

    def build() -> SpikingResNet:
        net = SpikingResNet(lay, T=T, in_channels=in_channels, norm=norm, block=block, lif=dict(lif))
        if norm == "none" and init_x is not None:
            threshold_scaled_init(net, init_x, float(lif["threshold"]))
        return net

    return build


def per_seed_isometry(runs: list[Any]) -> list[float]:
    """Per final run (seed order): the mean over training epochs (1…E) of the isometry probe's
    mean |log10 ratio| — block dynamical isometry measured through training, not only at init."""
    out = []
    for r in sorted(runs, key=lambda r: r.seed):
        vals = [p["mean_abs_log_ratio"] for p in r.probes if p["epoch"] >= 1]
        if not vals:
            raise ValueError(f"run {r.variant}/seed {r.seed} has no isometry probe after an epoch")
        out.append(sum(vals) / len(vals))
    return out


def init_firing_table(builders: Mapping[str, Callable[[], nn.Module]], x: Tensor, seed: int = 0):
    """Per variant: min / mean / max firing rate over its LIF layers at initialisation, and the
    fraction of LIF layers that emit any spike (a variant with a silent layer cannot learn)."""
    import pandas as pd

    x = smoke.batch(x)
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


@dataclass
class DepthSweep:
    """A depth sweep of several block kinds under one budget: per (block, depth) the final
    runs (one per seed) of :func:`compendium.learning.compare_tuned`, and the learning rate
    each block kind was given (tuned once, at ``tune_depth``, with the same trials for all)."""

    runs: dict[tuple[str, int], list[TunedRun]]
    chosen: dict[str, float]
    tuning: TunedComparison

    @property
    def blocks(self) -> list[str]:
        return list(self.chosen)

    @property
    def depths(self) -> list[int]:
        return sorted({d for _, d in self.runs})

    def frame(self):
        """One row per (block, depth, seed): final training loss and accuracy, test accuracy."""
        import pandas as pd

        rows = [{"block": b, "depth": d, "seed": r.seed, "train_loss": r.history.last("train_loss"),
                 "train_acc": r.history.last("train_acc"), "test_acc": r.test_acc}
                for (b, d), runs in self.runs.items() for r in runs]
        return pd.DataFrame(rows)

    def loss_growth(self, block: str) -> list[float]:
        """Per seed: final training loss of the deepest net minus that of the shallowest (> 0: degradation)."""
        lo, hi = self.depths[0], self.depths[-1]
        shallow = {r.seed: r.history.last("train_loss") for r in self.runs[(block, lo)]}
        deep = {r.seed: r.history.last("train_loss") for r in self.runs[(block, hi)]}
        return [deep[s] - shallow[s] for s in sorted(deep)]


def depth_sweep_training(builder: Callable[[str, int], Callable[[], nn.Module]], blocks: Sequence[str],
                         depths: Sequence[int], train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], *,
                         lrs: Sequence[float], tune_depth: int, tune_epochs: int, epochs: int, seeds: Sequence[int],
                         val_fraction: float = 0.1, split_seed: int = 0, batch_size: int = 64, device: str = "cpu",
                         probe: Callable[[nn.Module, int], dict[str, Any]] | None = None) -> DepthSweep:
    """Train every block kind at every depth under one budget.

    ``builder(block, depth)`` returns a builder of fresh nets. Each block kind's learning rate
    is chosen once, at ``tune_depth``, from the same ``lrs`` trials (validation split), then
    every (block, depth) is trained under ``seeds`` at that rate; ``probe`` runs before training
    and after every epoch (gradient norms per block, firing rates)."""
    if tune_depth not in depths:
        raise ValueError(f"tune_depth {tune_depth} must be one of the swept depths {list(depths)}")
    common = dict(tune_epochs=tune_epochs, epochs=epochs, seeds=seeds, val_fraction=val_fraction, split_seed=split_seed,
                  batch_size=batch_size, device=device, probe=probe, keep_models=True)
    tuning = compare_tuned({b: builder(b, tune_depth) for b in blocks}, train, test, lrs=lrs, **common)
    runs = {(b, tune_depth): tuning.runs_of(b) for b in blocks}
    for depth in depths:
        if depth == tune_depth:
            continue
        for b in blocks:
            out = compare_tuned({b: builder(b, depth)}, train, test, lrs=[tuning.chosen[b]], **common)
            runs[(b, depth)] = out.runs_of(b)
    return DepthSweep(runs, dict(tuning.chosen), tuning)
