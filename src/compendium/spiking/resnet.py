"""Spiking residual networks built from the core LIF and :mod:`~compendium.spiking.norm`.

One builder, :class:`SpikingResNet`, takes a block kind from :data:`BLOCKS`, a normalisation
kind (``none``, ``bn``, ``tdbn``) and a stage layout. Everything runs multi-step on
``[T, B, ...]``: convolutions are folded over time, neurons loop over it.

Block kinds: ``standard`` (below), ``sew`` (:class:`SEWBlock`) and ``ms``
(:class:`MSBlock`, membrane shortcut). The standard block of STBP-tdBN (Zheng et al. 2021, its Fig. of the basic block) spikes
*after* the addition::

    x ──conv─norm(α=1)─LIF─conv─norm(α=1/√2)──(+)──LIF──► out
    └──────────── identity, or conv1×1─norm(α=1/√2) ──┘

(``α`` only matters for tdBN.) Depth counts the weight layers on the main path: the stem
convolution, two (basic) or three (bottleneck) per block, and the classifier layers;
shortcut projections are not counted, as in the ResNet papers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from compendium.spiking.layers import Encoder, MeanOverTime, SeqFold
from compendium.spiking.neuron import LIF
from compendium.spiking.norm import RESIDUAL_ALPHA, make_norm


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> SeqFold:
    return SeqFold(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False))


class StandardBlock(nn.Module):
    """Basic spiking residual block, spike after the add (STBP-tdBN)."""

    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int, norm: str, lif: dict[str, Any]):
        super().__init__()
        th = lif["threshold"]
        self.branch = nn.Sequential(
            _conv(cin, cout, 3, stride), make_norm(norm, cout, th), LIF(**lif),
            _conv(cout, cout, 3), make_norm(norm, cout, th, RESIDUAL_ALPHA))
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout else
                         nn.Sequential(_conv(cin, cout, 1, stride), make_norm(norm, cout, th, RESIDUAL_ALPHA)))
        self.out = LIF(**lif)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.branch(x) + self.shortcut(x))


class StandardBottleneck(nn.Module):
    """Bottleneck variant (1×1 → 3×3 → 1×1, expansion 4) for ResNet-50-style nets."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, norm: str, lif: dict[str, Any]):
        super().__init__()
        th, cout = lif["threshold"], width * 4
        self.branch = nn.Sequential(
            _conv(cin, width, 1), make_norm(norm, width, th), LIF(**lif),
            _conv(width, width, 3, stride), make_norm(norm, width, th), LIF(**lif),
            _conv(width, cout, 1), make_norm(norm, cout, th, RESIDUAL_ALPHA))
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout else
                         nn.Sequential(_conv(cin, cout, 1, stride), make_norm(norm, cout, th, RESIDUAL_ALPHA)))
        self.out = LIF(**lif)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.branch(x) + self.shortcut(x))


class SEWBlock(nn.Module):
    """Spike-element-wise block (Fang et al., NeurIPS 2021), ADD connection: the branch ends in
    spikes and they are added to the input spikes, ``out = SN(branch(s)) + s`` (values 0, 1, 2)::

        s ──conv─norm─LIF─conv─norm─LIF──(+)──► out
        └──── identity, or conv1×1─norm─LIF ──┘
    """

    expansion = 1
    takes_spikes = True

    def __init__(self, cin: int, cout: int, stride: int, norm: str, lif: dict[str, Any]):
        super().__init__()
        th = lif["threshold"]
        self.branch = nn.Sequential(_conv(cin, cout, 3, stride), make_norm(norm, cout, th), LIF(**lif),
                                    _conv(cout, cout, 3), make_norm(norm, cout, th), LIF(**lif))
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout else
                         nn.Sequential(_conv(cin, cout, 1, stride), make_norm(norm, cout, th), LIF(**lif)))

    def forward(self, x: Tensor) -> Tensor:
        return self.branch(x) + self.shortcut(x)


class MSBlock(nn.Module):
    """Membrane-shortcut block (Hu et al., arXiv:2112.08954 / 2201.07209): the branch starts
    with the neuron (LIF → conv → norm, twice) and the shortcut carries membrane-level values,
    so the addition happens before any spike and identity paths stay identity through depth::

        u ──LIF─conv─norm─LIF─conv─norm──(+)──► u'
        └──── identity, or LIF─conv1×1─norm ──┘

    (The down-sampling shortcut's ordering is our reading; convolutions always see spikes.)"""

    expansion = 1
    takes_spikes = False

    def __init__(self, cin: int, cout: int, stride: int, norm: str, lif: dict[str, Any]):
        super().__init__()
        th = lif["threshold"]
        self.branch = nn.Sequential(LIF(**lif), _conv(cin, cout, 3, stride), make_norm(norm, cout, th),
                                    LIF(**lif), _conv(cout, cout, 3), make_norm(norm, cout, th))
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout else
                         nn.Sequential(LIF(**lif), _conv(cin, cout, 1, stride), make_norm(norm, cout, th)))

    def forward(self, x: Tensor) -> Tensor:
        return self.branch(x) + self.shortcut(x)


StandardBlock.takes_spikes = True
StandardBottleneck.takes_spikes = True
# block kind -> (basic block, bottleneck block or None)
BLOCKS: dict[str, tuple[type[nn.Module], type[nn.Module] | None]] = {
    "standard": (StandardBlock, StandardBottleneck), "sew": (SEWBlock, None), "ms": (MSBlock, None)}


@dataclass(frozen=True)
class ResNetLayout:
    """Stage layout: blocks per stage, widths, stem and classifier."""

    blocks: tuple[int, ...]
    widths: tuple[int, ...]
    stem_channels: int
    stem: str = "cifar"  # "cifar": conv3×3 stride 1; "imagenet": conv7×7 stride 2 + max-pool
    bottleneck: bool = False
    fc_hidden: tuple[int, ...] = field(default_factory=tuple)

    def depth(self) -> int:
        per_block = 3 if self.bottleneck else 2
        return 1 + per_block * sum(self.blocks) + len(self.fc_hidden) + 1


# Architectures as the papers name them. ResNet-19's layout (stem 128; 3, 3, 2 basic blocks of
# 128, 256, 512; FC 256) is our reading of the STBP-tdBN architecture table [assumed, not
# transcribed]; ResNet-34/50 are He et al.'s ImageNet layouts.
LAYOUTS: dict[str, ResNetLayout] = {
    "resnet19": ResNetLayout((3, 3, 2), (128, 256, 512), 128, "cifar", False, (256,)),
    "resnet34": ResNetLayout((3, 4, 6, 3), (64, 128, 256, 512), 64, "imagenet"),
    "resnet50": ResNetLayout((3, 4, 6, 3), (64, 128, 256, 512), 64, "imagenet", True),
    # MS-ResNet's ImageNet nets: -18 and -34 use He et al.'s layouts; -104's (3, 8, 32, 8) basic
    # blocks is our reading of the paper's table [assumed, not transcribed].
    "ms-resnet18": ResNetLayout((2, 2, 2, 2), (64, 128, 256, 512), 64, "imagenet"),
    "ms-resnet34": ResNetLayout((3, 4, 6, 3), (64, 128, 256, 512), 64, "imagenet"),
    "ms-resnet104": ResNetLayout((3, 8, 32, 8), (64, 128, 256, 512), 64, "imagenet"),
}


def small_layout(blocks_per_stage: int, width: int) -> ResNetLayout:
    """CIFAR-style ``6n + 2``-layer net with three stages of width ``w, 2w, 4w`` (for CPUs)."""
    return ResNetLayout((blocks_per_stage,) * 3, (width, 2 * width, 4 * width), width)


class SpikingResNet(nn.Module):
    """Encoder → stem → residual stages → global average pool → classifier → mean over time."""

    def __init__(self, layout: ResNetLayout, *, T: int = 4, in_channels: int = 3, classes: int = 10,
                 norm: str = "tdbn", block: str = "standard", encoding: str = "direct",
                 lif: dict[str, Any] | None = None):
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {block!r}")
        block_cls = BLOCKS[block][1 if layout.bottleneck else 0]
        if block_cls is None:
            raise ValueError(f"block {block!r} has no bottleneck variant")
        # blocks that take membrane-level input get a stem without a neuron and fire before the head
        spiking_stem = block_cls.takes_spikes
        lif = {"decay": 0.25, "threshold": 0.5, "step_mode": "multi", **(lif or {})}
        self.layout, self.T = layout, T
        self.encoder = Encoder(encoding, T)
        stem: list[nn.Module]
        neuron = [LIF(**lif)] if spiking_stem else []
        if layout.stem == "imagenet":
            stem = [_conv(in_channels, layout.stem_channels, 7, 2), make_norm(norm, layout.stem_channels, lif["threshold"]),
                    *neuron, SeqFold(nn.MaxPool2d(3, 2, 1))]
        else:
            stem = [_conv(in_channels, layout.stem_channels, 3), make_norm(norm, layout.stem_channels, lif["threshold"]),
                    *neuron]
        self.stem = nn.Sequential(*stem)
        blocks: list[nn.Module] = []
        cin = layout.stem_channels
        for i, (n, w) in enumerate(zip(layout.blocks, layout.widths)):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block_cls(cin, w, stride, norm, lif))
                cin = w * block_cls.expansion
        self.blocks = nn.ModuleList(blocks)
        head: list[nn.Module] = ([] if spiking_stem else [LIF(**lif)]) + [SeqFold(nn.AdaptiveAvgPool2d(1), nn.Flatten())]
        for h in layout.fc_hidden:
            head += [SeqFold(nn.Linear(cin, h)), LIF(**lif)]
            cin = h
        head += [SeqFold(nn.Linear(cin, classes)), MeanOverTime()]
        self.head = nn.Sequential(*head)

    def features(self, x: Tensor) -> Tensor:
        h = self.stem(self.encoder(x))
        for b in self.blocks:
            h = b(h)
        return h

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
