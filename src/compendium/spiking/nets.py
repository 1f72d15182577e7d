"""Small spiking classifiers (and their ANN twins) used by the primer and the benchmarks.

Both nets are built from the same list of stateless layers; the SNN folds time into batch
for those layers (:class:`~compendium.spiking.layers.SeqFold`) and puts a multi-step
:class:`~compendium.spiking.neuron.LIF` where the ANN has a ReLU. The readout is the output
layer's current averaged over the ``T`` steps (a non-spiking integrator), so logits are
real-valued and cross-entropy applies.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor, nn

from compendium.spiking.layers import Encoder, MeanOverTime, SeqFold
from compendium.spiking.neuron import LIF, lif_maxpool2d, unhooked


def conv_stages(in_channels: int, channels: tuple[int, ...], hidden: int, classes: int, image_size: int) -> list[list[nn.Module]]:
    """Stages of stateless layers; an activation (ReLU or LIF) follows every stage but the last.

    ``[conv3x3(c) → maxpool2] × len(channels) → flatten → linear(hidden) → linear(classes)``"""
    stages: list[list[nn.Module]] = []
    c_in, size = in_channels, image_size
    for i, c in enumerate(channels):
        # pooling sits before the next conv so the activation acts on the conv's output; max
        # pooling keeps spikes binary, so the next layer still only accumulates
        pre = [nn.MaxPool2d(2)] if i > 0 else []
        stages.append([*pre, nn.Conv2d(c_in, c, 3, padding=1, bias=False)])
        c_in = c
        size //= 2 if i > 0 else 1
    size //= 2
    stages.append([nn.MaxPool2d(2), nn.Flatten(), nn.Linear(c_in * size * size, hidden, bias=False)])
    stages.append([nn.Linear(hidden, classes)])
    return stages


READOUTS = ("current", "rate")


def _fusable_pool(lif: nn.Module, nxt: nn.Module) -> bool:
    """Whether ``lif`` followed by ``nxt`` is a multi-step :class:`LIF` (plain-number decay and
    threshold, no recorded membranes) followed by a :class:`SeqFold` whose first layer is a
    2×2 max pooling of stride 2 (what :func:`conv_stages` builds), all without hooks."""
    if type(lif) is not LIF or lif.step_mode != "multi" or lif.record_mem or type(nxt) is not SeqFold:
        return False
    if lif.beta.requires_grad or lif.threshold.requires_grad:
        return False
    seq = nxt.module
    if type(seq) is not nn.Sequential or not len(seq) or type(seq[0]) is not nn.MaxPool2d:
        return False
    pool = seq[0]
    pair = lambda v, k: v in (k, (k, k))  # noqa: E731 - MaxPool2d keeps what it was given
    if not (pair(pool.kernel_size, 2) and pair(pool.stride, 2) and pair(pool.padding, 0) and pair(pool.dilation, 1)
            and not pool.ceil_mode and not pool.return_indices):
        return False
    return unhooked(lif, nxt, seq, pool)


class SpikingBody(nn.Sequential):
    """The ``[T, B, ...]`` layers of a :class:`SpikingClassifier`: an ``nn.Sequential`` (same
    children, same ``state_dict`` keys) that runs each multi-step LIF followed by a max
    pooling as one call of :func:`~compendium.spiking.neuron.lif_maxpool2d`, which never
    stores the full-resolution spikes (it gives the composition's output and gradient bit for
    bit). Layers observed by hooks (spike counters, activity regularisers) run one by one."""

    def forward(self, x: Tensor) -> Tensor:
        layers = list(self)
        i = 0
        while i < len(layers):
            layer = layers[i]
            if x.dim() == 5 and i + 1 < len(layers) and _fusable_pool(layer, layers[i + 1]):
                layer.mem_seq = None
                decay, threshold = layer._params()
                x = lif_maxpool2d(x, decay, threshold, layer.reset, layer.detach_reset, layer.surrogate)
                x = SeqFold.fold(layers[i + 1].module[1:], x)  # the layers after the pooling
                i += 2
            else:
                x = layer(x)
                i += 1
        return x


class SpikingClassifier(nn.Module):
    """Encoder → [stateless stage → LIF] × n → output stage → mean over time.

    ``readout="current"``: the output layer's current averaged over ``T`` (a non-spiking
    integrator; real-valued logits). ``readout="rate"``: the output layer spikes too and the
    output is its firing rate in [0, 1] (the STBP papers' readout, trained with MSE to the
    one-hot label or with cross-entropy on the rates). ``lif`` sets every neuron layer;
    ``layer_lif`` overrides single layers by index among the neuron layers (``-1`` the last,
    e.g. ``{-2: {"threshold": 1.0}}`` the penultimate layer with a rate readout)."""

    def __init__(self, stages: list[list[nn.Module]], T: int, encoding: str = "rate", lif: dict[str, Any] | None = None,
                 readout: str = "current", layer_lif: dict[int, dict[str, Any]] | None = None):
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        lif = {"decay": 0.5, "threshold": 0.5, **(lif or {})}
        n_neurons = len(stages) - (1 if readout == "current" else 0)
        overrides: dict[int, dict[str, Any]] = {}
        for k, v in (layer_lif or {}).items():
            if not -n_neurons <= k < n_neurons:
                raise ValueError(f"layer_lif index {k} out of range for {n_neurons} neuron layers")
            overrides[k % n_neurons] = v
        self.T, self.readout_kind = T, readout
        self.encoder = Encoder(encoding, T)
        layers: list[nn.Module] = []
        for i, stage in enumerate(stages):
            layers.append(SeqFold(*stage))
            if i < n_neurons:
                layers.append(LIF(step_mode="multi", **{**lif, **overrides.get(i, {})}))
        self.body = SpikingBody(*layers)
        self.readout = MeanOverTime()

    def forward(self, x: Tensor) -> Tensor:
        return self.readout(self.body(self.encoder(x)))

    def forward_spikes(self, spikes: Tensor) -> Tensor:
        """The network on a given input spike tensor ``[T, B, ...]``, bypassing the encoder."""
        if spikes.shape[0] != self.T:
            raise ValueError(f"spike input must be [T={self.T}, B, ...], got shape {tuple(spikes.shape)}")
        return self.readout(self.body(spikes))


class ANNClassifier(nn.Module):
    """The same stages with ReLU activations (the ANN twin)."""

    def __init__(self, stages: list[list[nn.Module]]):
        super().__init__()
        layers: list[nn.Module] = []
        for i, stage in enumerate(stages):
            layers += stage
            if i < len(stages) - 1:
                layers.append(nn.ReLU())
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def spiking_convnet(T: int = 4, channels: tuple[int, ...] = (8, 16), hidden: int = 64, classes: int = 10,
                    in_channels: int = 1, image_size: int = 28, encoding: str = "rate",
                    lif: dict[str, Any] | None = None) -> SpikingClassifier:
    return SpikingClassifier(conv_stages(in_channels, channels, hidden, classes, image_size), T, encoding, lif)


def ann_convnet(channels: tuple[int, ...] = (8, 16), hidden: int = 64, classes: int = 10, in_channels: int = 1,
                image_size: int = 28) -> ANNClassifier:
    return ANNClassifier(conv_stages(in_channels, channels, hidden, classes, image_size))


def mlp_stages(sizes: tuple[int, ...], bias: bool = True) -> list[list[nn.Module]]:
    """``flatten → linear`` stages for layer sizes ``(in, h1, ..., out)``."""
    if len(sizes) < 2:
        raise ValueError(f"an MLP needs at least input and output sizes, got {sizes}")
    stages: list[list[nn.Module]] = [[nn.Flatten(), nn.Linear(sizes[0], sizes[1], bias=bias)]]
    stages += [[nn.Linear(a, b, bias=bias)] for a, b in zip(sizes[1:-1], sizes[2:])]
    return stages


def spiking_mlp(sizes: tuple[int, ...] = (784, 256, 10), T: int = 8, encoding: str = "rate",
                lif: dict[str, Any] | None = None, readout: str = "current",
                layer_lif: dict[int, dict[str, Any]] | None = None, bias: bool = True) -> SpikingClassifier:
    return SpikingClassifier(mlp_stages(sizes, bias), T, encoding, lif, readout, layer_lif)


def ann_mlp(sizes: tuple[int, ...] = (784, 256, 10), bias: bool = True) -> ANNClassifier:
    """The ReLU twin of :func:`spiking_mlp`."""
    return ANNClassifier(mlp_stages(sizes, bias))


NeuronFactory = Callable[[], nn.Module]
