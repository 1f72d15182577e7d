"""Initialisation under which an un-normalised spiking network can learn, and the check that it fires.

A spiking net whose pre-activations never reach the threshold emits no spikes, no neuron sits
inside the surrogate window, and its gradient is exactly zero: it cannot learn for a trivial
reason. PyTorch's default convolution initialisation (uniform with bound ``1/sqrt(fan_in)``)
gives pre-activations far below a threshold of 0.5 after a few layers, so a deep spiking
ResNet *without* normalisation trained from it is a crippled baseline, not a test of
normalisation. :func:`threshold_scaled_init` is the data-dependent, layer-sequential
unit-variance initialisation of Mishkin & Matas (LSUV, ICLR 2016) with the target set to the
firing threshold: each weight layer, in forward order, is rescaled so that its output on a
batch of training inputs has standard deviation ``gain · V_th``. A normalised layer after it
makes the rescaling irrelevant to the forward pass (BN and tdBN are invariant to the scale of
their input) but not to training: Adam's steps are absolute, so rescaled weights change the
effective learning rate. Chapters therefore apply it to the un-normalised variant only, and
initialise normalised variants the standard way their authors did.

Both functions run the model in training mode (batch statistics, as during training) and
restore every buffer afterwards, so BN running statistics are left as they were.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn


@contextmanager
def frozen_buffers(model: nn.Module) -> Iterator[None]:
    """Run a block in training mode (batch statistics) and restore every buffer (BN running stats) after."""
    saved = {k: v.clone() for k, v in model.named_buffers()}
    was_training = model.training
    model.train()
    try:
        yield
    finally:
        model.train(was_training)
        for k, v in model.named_buffers():
            v.copy_(saved[k])


def _weight_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@torch.no_grad()
def threshold_scaled_init(model: nn.Module, x: Tensor, threshold: float, gain: float = 1.0,
                          iterations: int = 2,
                          targets: Sequence[tuple[nn.Module, nn.Module]] | None = None) -> list[float]:
    """Rescale every conv/linear weight, in forward order, so its output std on ``x`` is ``gain·threshold``.

    ``targets`` overrides which weights are scaled: ``(layer, measured)`` pairs, in forward
    order, rescaling ``layer.weight`` until the output of ``measured`` (the layer itself, or the
    stage that ends in it) has that std. By default every conv/linear layer but the last (the
    classifier, which feeds no neuron) is its own measured module. Returns the final output std
    of each target (for the chapter's record).

    Each measuring pass stops at the measured module: this gives the same weights as running
    the whole net only because nothing after that module draws random numbers or keeps state
    between calls in the models it is used on (multi-step LIF layers, random draws only in
    the input encoder before every layer) — a model with dropout or a stateful single-step
    neuron after a measured layer would see a different random stream or state. Where every
    module is known to be pure (:func:`_pure_modules`: direct input, multi-step neurons, the
    ResNets' blocks) and no hook observes one, the ``iterations`` passes after the first run the
    measured module alone on the input it received in the first (when the rescaled layer lies
    inside it, as nothing before it has changed): the same weights bit for bit, at a third of
    the cost (a 50-layer net's init took 15 % of the tdbn chapter). Otherwise every pass runs
    the model from ``x``."""
    from compendium import smoke
    from compendium.spiking.neuron import unhooked

    x, iterations = smoke.batch(x), smoke.limit(iterations, 1)  # smoke mode: one pass per layer, a batch of two
    pairs = targets if targets is not None else [(layer, layer) for layer in _weight_layers(model)[:-1]]
    stds: list[float] = []
    # a pass can start from the measured module's recorded input only where nothing on the way
    # draws random numbers, keeps state or is observed by a hook (a hook may change or count)
    reusable = _pure_modules(model) and unhooked(*model.modules())

    def measured_pass(measured: nn.Module) -> tuple[float, tuple[tuple, dict]]:
        # the forward stops at the measured module's output (what comes after cannot change it),
        # so the layer-by-layer pass costs about half of L full forwards instead of L
        got: list[tuple[Tensor, tuple, dict]] = []

        def grab(_m: nn.Module, args: tuple, kwargs: dict, o: Tensor) -> None:
            got.append((o, args, kwargs))
            raise _Measured

        h = measured.register_forward_hook(grab, with_kwargs=True)
        try:
            model(x)
        except _Measured:
            pass
        finally:
            h.remove()
        if not got:
            raise RuntimeError(f"{type(measured).__name__} was not called in the forward pass of {type(model).__name__}")
        out, args, kwargs = got[0]
        return float(out.std()), (args, kwargs)

    with frozen_buffers(model):
        for layer, measured in pairs:
            # the recorded input stays valid while only weights inside the measured module change
            reuse = reusable and any(m is layer for m in measured.modules())
            for i in range(iterations + 1):
                if i == 0 or not reuse:
                    s, (args, kwargs) = measured_pass(measured)
                else:
                    s = float(measured(*args, **kwargs).std())
                if i == iterations:
                    stds.append(s)
                elif s > 0:
                    layer.weight.mul_(gain * threshold / s)
    return stds


def _pure_modules(model: nn.Module) -> bool:
    """Whether every module of ``model`` is known to compute its output from its input and
    parameters alone (no random draws, no state carried between calls; batch norm's running
    statistics are written but never read in training mode): then the input of a measured
    module is the same in every pass of :func:`threshold_scaled_init` until a weight before it
    changes, and the passes after the first can start from it instead of from ``x`` (the same
    numbers, bit for bit). A rate encoder, a single-step neuron, an in-place ReLU or any module
    not listed (dropout, a subclass, a user's own) makes every pass run the model from ``x``."""
    from compendium.spiking import layers, neuron, norm, resnet

    pure = {nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.Identity, nn.Flatten, nn.Sequential,
            nn.ModuleList, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.ReLU,
            layers.SeqFold, layers.MeanOverTime, norm.TdBN, norm.PerStepBN, resnet.SpikingResNet,
            *(b for pair in resnet.BLOCKS.values() for b in pair if b is not None)}
    for m in model.modules():
        if type(m) is layers.Encoder:
            ok = m.kind != "rate"
        elif type(m) is neuron.LIF:
            ok = m.step_mode == "multi"
        elif type(m) is nn.ReLU:
            ok = not m.inplace  # it could overwrite a recorded input
        else:
            ok = type(m) in pure
        if not ok:
            return False
    return True


class _Measured(BaseException):
    """Raised by the measuring hook to end a forward pass early (a BaseException, so that a
    model's own ``except Exception`` cannot swallow it)."""


@torch.no_grad()
def firing_rates(model: nn.Module, x: Tensor, kinds: tuple[type, ...] | None = None) -> list[float]:
    """Mean firing rate of every neuron layer of ``model`` on ``x`` (forward order), as in training.

    ``kinds`` are the neuron module types to read (default: :class:`~compendium.spiking.neuron.LIF`);
    a neuron returning a tuple is read at its first element (the spikes)."""
    from compendium.spiking.neuron import LIF

    rates: list[float] = []

    def record(_m: nn.Module, _i: tuple, out: Tensor | tuple) -> None:
        rates.append(float((out[0] if isinstance(out, tuple) else out).float().mean()))

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, kinds or (LIF,))]
    try:
        with frozen_buffers(model):
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return rates
