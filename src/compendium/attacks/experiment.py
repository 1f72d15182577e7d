"""The adversarial chapter's experiments, as functions (the notebook only calls and plots).

Models follow the research notes' CPU check: an STBP MLP ``in-hidden-10`` with hard-reset LIF
neurons, a spiking output layer read out as firing rates, trained with MSE (to one-hot) or
cross-entropy on the rates; the penultimate (hidden) layer's threshold is the knob of the
paper's loss × threshold analysis. The ANN twins have the same shape with ReLU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from compendium.attacks.spike import output_loss, spike_attack, zero_gradient
from compendium.learning import History, fit
from compendium.progress import progress
from compendium.spiking.counters import OpCounter
from compendium.spiking.nets import SpikingClassifier, ann_mlp, spiking_mlp

Data = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class Setup:
    """Shared settings of every model and attack in the chapter."""

    T: int = 8
    hidden: int = 400
    decay: float = 0.5
    threshold: float = 0.5  # every neuron layer's threshold unless overridden
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 64
    iterations: int = 40
    gamma: float = 0.05
    device: str = "cpu"



def train_snn(train: Data, test: Data | None, setup: Setup, *, loss: str = "ce", penultimate_threshold: float | None = None,
              in_features: int = 784, encoding: str = "rate", seed: int = 0, desc: str = "SNN") -> tuple[SpikingClassifier, History]:
    """An STBP MLP with a spiking (rate) readout, trained with ``loss``."""
    torch.manual_seed(seed)
    layer_lif = {-2: {"threshold": penultimate_threshold}} if penultimate_threshold is not None else None
    net = spiking_mlp((in_features, setup.hidden, 10), T=setup.T, encoding=encoding, readout="rate",
                      lif={"decay": setup.decay, "threshold": setup.threshold}, layer_lif=layer_lif)
    hist = fit(net, train, test=test, epochs=setup.epochs, lr=setup.lr, batch_size=setup.batch_size,
               loss_fn=output_loss(loss), device=setup.device, seed=seed, desc=desc, show_progress=False)
    return net.eval(), hist


def train_ann(train: Data, test: Data | None, setup: Setup, *, in_features: int = 784, seed: int = 0,
              desc: str = "ANN") -> tuple[nn.Module, History]:
    """The ReLU twin (cross-entropy on logits)."""
    torch.manual_seed(seed)
    net = ann_mlp((in_features, setup.hidden, 10))
    hist = fit(net, train, test=test, epochs=setup.epochs, lr=setup.lr, batch_size=setup.batch_size,
               device=setup.device, seed=seed, desc=desc, show_progress=False)
    return net.eval(), hist


def loss_threshold_map(train: Data, spikes: Tensor, labels: Tensor, setup: Setup, *, losses: tuple[str, ...] = ("mse", "ce"),
                       thresholds: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5), seeds: tuple[int, ...] = (0, 1),
                       show_progress: bool = True) -> pd.DataFrame:
    """For each training loss × penultimate threshold × seed: clean accuracy on the attacked
    spike trains, the fraction of samples whose input gradient is exactly zero, and the
    white-box success with G2S alone and with G2S + RSF (one row per model)."""
    rows = []
    grid = [(l, th, s) for l in losses for th in thresholds for s in seeds]
    for loss, th, seed in progress(grid, desc="loss x threshold", enabled=show_progress):
        net, hist = train_snn(train, None, setup, loss=loss, penultimate_threshold=th, seed=seed,
                              desc=f"SNN {loss} th={th} seed={seed}")
        zero = zero_gradient(net.forward_spikes, spikes, labels, loss=loss)
        kw = dict(loss=loss, iterations=setup.iterations, gamma=setup.gamma, seed=seed, show_progress=False)
        g2s_only = spike_attack(net.forward_spikes, spikes, labels, use_rsf=False, **kw)
        both = spike_attack(net.forward_spikes, spikes, labels, **kw)
        correct = both.clean_correct
        rows.append({"loss": loss, "threshold": th, "seed": seed, "clean_acc": float(correct.mean()),
                     "hidden_rate": hidden_rate(net, spikes),
                     "zero_grad": float(zero[correct].mean()) if correct.any() else float("nan"),
                     "success_g2s": g2s_only.success_rate(), "success_g2s_rsf": both.success_rate(),
                     "flips_g2s_rsf": both.summary()["mean_flips"], "train_loss": hist.last("train_loss")})
    return pd.DataFrame(rows)


@torch.no_grad()
def hidden_rate(net: SpikingClassifier, spikes: Tensor) -> float:
    """Mean firing rate of the penultimate (hidden) neuron layer on spike input ``[T, N, ...]``."""
    with OpCounter(net) as counter:
        net.forward_spikes(spikes)
    layer = list(counter.spikes.values())[-2]
    return layer.spikes / layer.neuron_steps


def ablation(net: SpikingClassifier, spikes: Tensor, labels: Tensor, setup: Setup, *, loss: str = "ce",
             gammas: tuple[float, ...] = (0.01, 0.05, 0.1), seed: int = 0) -> pd.DataFrame:
    """Success with the attack's parts switched off, and with other RSF turnover rates."""
    variants = [("G2S + RSF", True, True, setup.gamma), ("G2S only", True, False, setup.gamma),
                ("raw sign + RSF", False, True, setup.gamma), ("raw sign only", False, False, setup.gamma)]
    variants += [(f"G2S + RSF, gamma={g}", True, True, g) for g in gammas if g != setup.gamma]
    rows = []
    for name, use_g2s, use_rsf, gamma in variants:
        r = spike_attack(net.forward_spikes, spikes, labels, loss=loss, iterations=setup.iterations, use_g2s=use_g2s,
                         use_rsf=use_rsf, gamma=gamma, seed=seed, show_progress=False)
        rows.append({"attack": name, **r.summary()})
    return pd.DataFrame(rows)


def budget_grid(*results, n: int = 60) -> np.ndarray:
    """L2 budgets spanning every result's successful perturbations (for success-vs-budget curves)."""
    top = max([float(np.max(r.l2[r.success])) for r in results if r.success.any()] + [1.0])
    return np.linspace(0, top * 1.02, n)
