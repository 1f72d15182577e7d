"""The adversarial chapter's experiments, as functions (the notebook only calls and plots).

Models follow the research notes' CPU check: an STBP MLP ``in-hidden-10`` with hard-reset LIF
neurons, a spiking output layer read out as firing rates, trained with MSE (to one-hot) or
cross-entropy on the rates; the penultimate (hidden) layer's threshold is the knob of the
paper's loss × threshold analysis. The ANN twins have the same shape with ReLU: one reads the
same rate-coded spike trains as the SNN (:class:`RateANN`, the comparison's twin: same input,
same encoding budget of ``T × 784`` bits), one reads the analog pixels (context only).

Fairness (what every variant gets): the same learning-rate trials selected on a validation
split (:func:`compendium.learning.compare_tuned`), the same epochs, batch size and seeds, and
an initialisation under which it learns — PyTorch's default for the ANNs, and for every SNN
the threshold-scaled (LSUV) initialisation of :func:`threshold_init`, without which the
default initialisation leaves the output layer (and, at penultimate thresholds ≥ 1, the hidden
layer) silent. Every attack gets the same number of iterations on every model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from compendium.attacks.spike import AttackResult, all_zero, output_loss, spike_attack
from compendium.book.quantities import Quantity, difference
from compendium.learning import History, fit
from compendium.learning.tuning import TunedComparison, compare_tuned
from compendium.progress import progress
from compendium.spiking.counters import OpCounter
from compendium.spiking.encoding import rate
from compendium.spiking.init import firing_rates, threshold_scaled_init
from compendium.spiking.layers import Encoder, SeqFold
from compendium.spiking.nets import SpikingClassifier, ann_mlp, spiking_mlp
from compendium.spiking.neuron import LIF

Data = tuple[Tensor, Tensor]
Measured = dict[str, "Quantity | str"]  # a quantity, or the reason it could not be measured


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
    init_gain: float = 1.0  # threshold_init: target std of every neuron layer's input current, in units of V_th


# --- models ---------------------------------------------------------------------------------

class RateANN(nn.Module):
    """The ANN twin on the SNN's own input: Bernoulli rate coding over ``T`` steps (the same
    encoder as the SNN), the time average of the spike train (the rate image, values
    ``k/T``), then a ReLU MLP. It sees exactly the ``T × in`` input bits the SNN sees, so both
    are attacked in the same input space with the same budget."""

    def __init__(self, sizes: tuple[int, ...], T: int):
        super().__init__()
        self.T = int(T)
        self.encoder = Encoder("rate", self.T)
        self.net = ann_mlp(sizes)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.encoder(x).mean(0))

    def forward_spikes(self, spikes: Tensor) -> Tensor:
        """The network on a given input spike tensor ``[T, B, ...]`` (its time average)."""
        if spikes.shape[0] != self.T:
            raise ValueError(f"spike input must be [T={self.T}, B, ...], got shape {tuple(spikes.shape)}")
        return self.net(spikes.mean(0))


@torch.no_grad()
def threshold_init(net: SpikingClassifier, x: Tensor, threshold: float, gain: float = 1.0,
                   iterations: int = 2) -> list[float]:
    """Threshold-scaled LSUV initialisation (Mishkin & Matas, ICLR 2016, with the target set
    to the firing threshold, as :func:`compendium.spiking.init.threshold_scaled_init`) for a
    spiking net whose every stage feeds a neuron layer, the spiking output included (the rate
    readout): in forward order, the last weight layer of each stage is rescaled so that the
    stage's output current on ``x`` has standard deviation ``gain · threshold``.

    ``threshold`` is the network's ``V_th`` — not a layer's own (possibly swept) threshold — so
    that nets that differ only in one layer's threshold start from the same first-layer
    weights and the threshold keeps its effect on firing. Runs in training mode and restores
    buffers. Returns each stage's output std after rescaling."""
    stages = list(net.body)
    targets = []
    for stage, nxt in zip(stages, stages[1:]):
        weights = [m for m in stage.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        if isinstance(stage, SeqFold) and isinstance(nxt, LIF) and weights:
            targets.append((weights[-1], stage))
    return threshold_scaled_init(net, x, threshold, gain, iterations, targets=targets)


def build_snn(setup: Setup, init_x: Tensor | None, *, penultimate_threshold: float | None = None,
              in_features: int = 784, encoding: str = "rate") -> SpikingClassifier:
    """A fresh STBP MLP ``in-hidden-10`` with a spiking (rate) readout, threshold-initialised
    on ``init_x`` (a batch of training inputs; ``None`` keeps PyTorch's default init)."""
    layer_lif = {-2: {"threshold": penultimate_threshold}} if penultimate_threshold is not None else None
    net = spiking_mlp((in_features, setup.hidden, 10), T=setup.T, encoding=encoding, readout="rate",
                      lif={"decay": setup.decay, "threshold": setup.threshold}, layer_lif=layer_lif)
    if init_x is not None:
        threshold_init(net, init_x, setup.threshold, setup.init_gain)
    return net


def train_snn(train: Data, test: Data | None, setup: Setup, *, loss: str = "ce", penultimate_threshold: float | None = None,
              in_features: int = 784, encoding: str = "rate", seed: int = 0, lr: float | None = None,
              init_x: Tensor | None = None, desc: str = "SNN") -> tuple[SpikingClassifier, History, list[float]]:
    """An STBP MLP with a spiking (rate) readout, threshold-initialised on ``init_x`` (default:
    the first 512 training inputs) and trained with ``loss`` at ``lr`` (default ``setup.lr``).
    Returns the net, its history and its per-layer firing rates at initialisation."""
    torch.manual_seed(seed)
    init_x = (train[0][:512] if init_x is None else init_x).to(setup.device)
    net = build_snn(setup, init_x, penultimate_threshold=penultimate_threshold, in_features=in_features,
                    encoding=encoding)
    init_rates = firing_rates(net, init_x)
    hist = fit(net, train, test=test, epochs=setup.epochs, lr=setup.lr if lr is None else lr,
               batch_size=setup.batch_size, loss_fn=output_loss(loss), device=setup.device, seed=seed, desc=desc,
               show_progress=False)
    return net.eval(), hist, init_rates


def train_ann(train: Data, test: Data | None, setup: Setup, *, in_features: int = 784, seed: int = 0,
              desc: str = "ANN") -> tuple[nn.Module, History]:
    """The ReLU twin on analog inputs (cross-entropy on logits), PyTorch's default init."""
    torch.manual_seed(seed)
    net = ann_mlp((in_features, setup.hidden, 10))
    hist = fit(net, train, test=test, epochs=setup.epochs, lr=setup.lr, batch_size=setup.batch_size,
               device=setup.device, seed=seed, desc=desc, show_progress=False)
    return net.eval(), hist


def snn_label(loss: str, threshold: float) -> str:
    return f"SNN {loss.upper()}, θ_pen={threshold:g}"


ANN_RATE = "ANN (rate-coded input)"
ANN_ANALOG = "ANN (analog pixels)"


@dataclass
class Models:
    """Every trained model of the chapter and how each was trained.

    ``comparisons``: one :class:`TunedComparison` per training loss (the ANNs are in the
    cross-entropy one); ``spec[label]`` = ``(kind, loss, threshold)`` with kind ``"snn"``,
    ``"ann_rate"`` or ``"ann_analog"``; ``init_rates[label]`` the per-layer firing rates at
    initialisation of each SNN seed (``[[layer rates] per seed]``)."""

    comparisons: dict[str, TunedComparison]
    spec: dict[str, tuple[str, str, float | None]]
    init_rates: dict[str, list[list[float]]] = field(default_factory=dict)

    def runs(self, label: str):
        loss = self.spec[label][1]
        return sorted(self.comparisons[loss].runs_of(label), key=lambda r: r.seed)

    def model(self, label: str, seed: int) -> nn.Module:
        run = next(r for r in self.runs(label) if r.seed == seed)
        return run.model.eval()

    def seeds(self, label: str) -> list[int]:
        return [r.seed for r in self.runs(label)]

    def snn_labels(self, loss: str | None = None) -> list[str]:
        return [k for k, (kind, l, _) in self.spec.items() if kind == "snn" and (loss is None or l == loss)]

    def table(self) -> pd.DataFrame:
        """One row per variant: chosen learning rate, test accuracy per seed and mean, firing
        rates at initialisation (SNNs: the smallest layer rate over seeds)."""
        rows = []
        for label, (kind, loss, th) in self.spec.items():
            runs = self.runs(label)
            accs = [r.test_acc for r in runs]
            rates = self.init_rates.get(label)
            rows.append({"model": label, "loss": loss, "penultimate θ": th, "chosen lr": f"{runs[0].lr:g}",
                         "test acc (mean)": float(np.mean(accs)), "per seed": ", ".join(f"{a:.3f}" for a in accs),
                         "init rate hidden": min(r[0] for r in rates) if rates else float("nan"),
                         "init rate output": min(r[-1] for r in rates) if rates else float("nan")})
        return pd.DataFrame(rows).set_index("model")

    def all_fire_at_init(self, minimum: float = 1e-3) -> bool:
        """Does every layer of every SNN fire at a rate of at least ``minimum`` at initialisation?"""
        return bool(self.init_rates) and all(min(r) >= minimum for v in self.init_rates.values() for r in v)

    def budget_text(self) -> str:
        return next(iter(self.comparisons.values())).budget_text()


def train_models(train: Data, test: Data, setup: Setup, *, thresholds: Sequence[float], losses: Sequence[str] = ("ce", "mse"),
                 seeds: Sequence[int] = (0, 1), lrs: Sequence[float] = (1e-3,), tune_epochs: int = 1,
                 val_fraction: float = 0.1, analog_ann: bool = True, show_progress: bool = True) -> Models:
    """Train every variant with the same budget: each SNN (loss × penultimate threshold), the
    rate-input ANN twin and (``analog_ann``) the analog ANN get the same learning-rate trials
    ``lrs`` (``tune_epochs`` each on a ``val_fraction`` validation split of the training data,
    the best validation accuracy chosen) and are then trained under every seed for
    ``setup.epochs`` epochs (:func:`compendium.learning.compare_tuned`, one call per loss).
    Every SNN is threshold-initialised on the first 512 training inputs and its per-layer
    firing rates at initialisation are recorded (the check that it can learn)."""
    init_x = train[0][:512].to(setup.device)
    spec: dict[str, tuple[str, str, float | None]] = {}
    builders: dict[str, dict[str, Callable[[], nn.Module]]] = {loss: {} for loss in losses}
    for loss in losses:
        for th in thresholds:
            label = snn_label(loss, th)
            spec[label] = ("snn", loss, float(th))
            builders[loss][label] = (lambda th=th: build_snn(setup, init_x, penultimate_threshold=float(th)))
    if "ce" not in losses:
        raise ValueError("the ANN twins are trained with cross-entropy: losses must include 'ce'")
    spec[ANN_RATE] = ("ann_rate", "ce", None)
    builders["ce"][ANN_RATE] = lambda: RateANN((784, setup.hidden, 10), setup.T)
    if analog_ann:
        spec[ANN_ANALOG] = ("ann_analog", "ce", None)
        builders["ce"][ANN_ANALOG] = lambda: ann_mlp((784, setup.hidden, 10))
    init_rates: dict[str, list[list[float]]] = {}

    def probe(model: nn.Module, epoch: int) -> dict[str, Any]:
        if epoch == 0 and isinstance(model, SpikingClassifier):
            return {"init_rates": firing_rates(model, init_x)}
        return {}

    comparisons = {}
    for loss in losses:
        comparisons[loss] = compare_tuned(builders[loss], train, test, lrs=lrs, tune_epochs=tune_epochs,
                                          epochs=setup.epochs, seeds=seeds, val_fraction=val_fraction,
                                          split_seed=seeds[0], batch_size=setup.batch_size, device=setup.device,
                                          probe=probe, fit_kwargs={"loss_fn": output_loss(loss)},
                                          show_progress=show_progress, keep_models=True)
        for run in comparisons[loss].runs:
            if spec[run.variant][0] == "snn":
                init_rates.setdefault(run.variant, []).append(run.probes[0]["init_rates"])
    return Models(comparisons, spec, init_rates)


# --- the loss x threshold map ("trap") ------------------------------------------------------

@torch.no_grad()
def _correct(forward: Callable[[Tensor], Tensor], spikes: Tensor, labels: Tensor) -> Tensor:
    return forward(spikes).argmax(1) == labels


def zero_gradient_census(forward: Callable[[Tensor], Tensor], x: Tensor, labels: Tensor, T: int, *, loss: str = "ce",
                         seed: int = 0, batch_size: int = 500) -> tuple[int, int]:
    """Over the images ``x`` (rate-coded on the fly, ``T`` steps, one seeded draw per image in
    order): how many the model classifies right, and how many of those have an exactly
    all-zero input gradient ``∂L/∂S`` at the clean spike train — the state in which a gradient
    attack without RSF cannot move (the chapter's reading of the "trap")."""
    gen = torch.Generator(device=x.device).manual_seed(seed)
    loss_fn = output_loss(loss)
    n_correct = n_zero = 0
    for lo in range(0, len(labels), batch_size):
        s = rate(x[lo:lo + batch_size], T, gen).requires_grad_(True)
        y = labels[lo:lo + batch_size]
        out = forward(s)
        grad, = torch.autograd.grad(loss_fn(out, y) * len(y), s)
        ok = (out.argmax(1) == y).detach()
        n_correct += int(ok.sum())
        n_zero += int((all_zero(grad) & ok).sum())
    return n_correct, n_zero


def loss_threshold_map(models: Models, census: Data, spikes: Tensor, labels: Tensor, setup: Setup, *,
                       census_seed: int = 0, show_progress: bool = True) -> pd.DataFrame:
    """For each trained SNN (training loss × penultimate threshold × seed): the zero-gradient
    census over the images ``census`` (:func:`zero_gradient_census`: ``zero_n`` clean-correct
    images, ``zero_grad_count`` of them with an all-zero input gradient), and on the attacked
    spike trains ``spikes`` the white-box success of G2S alone (``attacked`` clean-correct
    samples, ``success_g2s_count`` fooled by G2S alone; with RSF every cell is fooled, as the
    ablation shows for the target). One row per model."""
    rows = []
    cells = [(label, seed) for label in models.snn_labels() for seed in models.seeds(label)]
    for label, seed in progress(cells, desc="loss x threshold", enabled=show_progress):
        _, loss, th = models.spec[label]
        net = models.model(label, seed)
        zero_n, zero_count = zero_gradient_census(net.forward_spikes, census[0], census[1], setup.T, loss=loss,
                                                  seed=census_seed)
        g2s_only = spike_attack(net.forward_spikes, spikes, labels, loss=loss, iterations=setup.iterations,
                                use_rsf=False, seed=seed, show_progress=False)
        correct = g2s_only.clean_correct
        rates = models.init_rates[label][models.seeds(label).index(seed)]
        rows.append({"loss": loss, "threshold": th, "seed": seed, "clean_acc": float(correct.mean()),
                     "init_rate_hidden": rates[0], "hidden_rate": hidden_rate(net, spikes),
                     "zero_grad": zero_count / zero_n if zero_n else float("nan"),
                     "success_g2s": g2s_only.success_rate(),
                     # counts behind the fractions
                     "zero_n": zero_n, "zero_grad_count": zero_count,
                     "attacked": int(correct.sum()), "success_g2s_count": int(g2s_only.success.sum())})
    return pd.DataFrame(rows)


@torch.no_grad()
def hidden_rate(net: SpikingClassifier, spikes: Tensor) -> float:
    """Mean firing rate of the penultimate (hidden) neuron layer on spike input ``[T, N, ...]``."""
    with OpCounter(net) as counter:
        net.forward_spikes(spikes)
    layer = list(counter.spikes.values())[-2]
    return layer.spikes / layer.neuron_steps


# --- the white-box ablation -----------------------------------------------------------------

def ablation_results(net: SpikingClassifier, spikes: Tensor, labels: Tensor, setup: Setup, *, loss: str = "ce",
                     gammas: tuple[float, ...] = (0.01, 0.05, 0.1), seed: int = 0) -> dict[str, AttackResult]:
    """The attack with its parts switched off, and with other RSF turnover rates: one
    per-sample :class:`AttackResult` per variant, all on the same samples."""
    variants = [("G2S + RSF", True, True, setup.gamma), ("G2S only", True, False, setup.gamma),
                ("raw sign + RSF", False, True, setup.gamma), ("raw sign only", False, False, setup.gamma)]
    variants += [(f"G2S + RSF, gamma={g}", True, True, g) for g in gammas if g != setup.gamma]
    return {name: spike_attack(net.forward_spikes, spikes, labels, loss=loss, iterations=setup.iterations,
                               use_g2s=use_g2s, use_rsf=use_rsf, gamma=gamma, seed=seed, show_progress=False)
            for name, use_g2s, use_rsf, gamma in variants}


def summarise(results: dict[str, AttackResult]) -> pd.DataFrame:
    """One row of :meth:`AttackResult.summary` per named attack."""
    return pd.DataFrame([{"attack": name, **r.summary()} for name, r in results.items()])


def ablation(net: SpikingClassifier, spikes: Tensor, labels: Tensor, setup: Setup, *, loss: str = "ce",
             gammas: tuple[float, ...] = (0.01, 0.05, 0.1), seed: int = 0) -> pd.DataFrame:
    """Success with the attack's parts switched off, and with other RSF turnover rates."""
    return summarise(ablation_results(net, spikes, labels, setup, loss=loss, gammas=gammas, seed=seed))


def budget_grid(*results, n: int = 60) -> np.ndarray:
    """L2 budgets spanning every result's successful perturbations (for success-vs-budget curves)."""
    top = max([float(np.max(r.l2[r.success])) for r in results if r.success.any()] + [1.0])
    return np.linspace(0, top * 1.02, n)


# --- SNN versus ANN: the same attacks, the same input, the same iterations --------------------

def topk_step(n_bits: int, iterations: int) -> int:
    """Bits flipped per step by the top-k attack: ``ceil(n_bits / (4 · iterations))``, so that
    the iteration budget can reach a quarter of the input bits (the same for every model)."""
    return max(1, math.ceil(n_bits / (4 * iterations)))


def attack_set(forward: Callable[[Tensor], Tensor], spikes: Tensor, labels: Tensor, setup: Setup, *, loss: str = "ce",
               seed: int = 0, rate_model: Callable[[Tensor], Tensor] | None = None,
               l2_step: float = 0.1) -> dict[str, AttackResult]:
    """The attacks a model of the robustness comparison gets, each with ``setup.iterations``
    iterations on the same spike trains ``[T, N, ...]``: the paper's G2S + RSF, and the
    standard sparse attack (:func:`compendium.attacks.spike.topk_flips`, ``k`` from
    :func:`topk_step`) with RSF for all-zero gradients. For a model that reads rate images
    (``rate_model``, e.g. :attr:`RateANN.net`) also its strongest standard L2 attack, BIM on the
    rate-image lattice (:func:`compendium.attacks.image.lattice_l2_attack`, step ``l2_step``)."""
    from compendium.attacks.image import lattice_l2_attack

    n_bits = int(np.prod(spikes.shape[:1] + spikes.shape[2:]))
    kw = dict(loss=loss, iterations=setup.iterations, gamma=setup.gamma, seed=seed, show_progress=False)
    out = {"G2S + RSF": spike_attack(forward, spikes, labels, **kw),
           "top-k + RSF": spike_attack(forward, spikes, labels, topk=topk_step(n_bits, setup.iterations), **kw)}
    if rate_model is not None:
        out["lattice BIM-L2"] = lattice_l2_attack(rate_model, spikes, labels, loss=loss, step=l2_step,
                                                  iterations=setup.iterations)
    return out


def smallest_perturbation(results: Sequence[AttackResult], metric: str, *, per: float = 1.0,
                          cap: float = math.inf) -> np.ndarray:
    """Per attacked sample, the smallest perturbation (``"l2"`` or ``"flips"``, divided by
    ``per``) among the attacks that fooled it — the strongest of the set, per sample — and
    ``cap`` (the largest value the metric can take: the sample resisted every attack within
    the budget) when none did. All results must be on the same model and samples."""
    if not results:
        raise ValueError("need at least one attack result")
    correct = results[0].clean_correct
    if any(not np.array_equal(r.clean_correct, correct) for r in results):
        raise ValueError("the attacks were not run on the same model and samples")
    vals = np.full(len(correct), cap, dtype=float)
    for r in results:
        won = r.success & r.clean_correct
        vals[won] = np.minimum(vals[won], {"l2": r.l2, "flips": r.flips}[metric][won] / per)
    return vals[correct]


def robustness(name: str, per_seed: Sequence[Sequence[AttackResult]], metric: str, *, per: float = 1.0,
               cap: float) -> Quantity | str:
    """The median smallest successful perturbation over the attacked samples of every seed's
    model (pooled), with a percentile-bootstrap interval. A sample no attack fooled counts as
    ``cap``; the median is reported only when fewer than half are censored so. A reason
    string when none was attacked or the median is censored."""
    values = np.concatenate([smallest_perturbation(rs, metric, per=per, cap=cap) for rs in per_seed])
    if values.size == 0:
        return f"{name}: the model classified none of the attacked samples right"
    if float(np.median(values)) >= cap:
        return f"{name}: at least half of the attacked samples resisted every attack, so the median is censored"
    return Quantity.bootstrap(name, values)


# --- quantities for the claims (rates over attacked samples, bootstrap medians) ---------------

def success_rate(name: str, result: AttackResult) -> Quantity | str:
    """The attack success rate: samples fooled among those attacked (the clean-correct ones),
    with Wilson's interval over the attacked samples. A reason string when none was attacked."""
    if result.n_attacked == 0:
        return f"{name}: the model classified none of the samples right, so none was attacked"
    return Quantity.rate(name, int((result.success & result.clean_correct).sum()), result.n_attacked)


def perturbation(name: str, result: AttackResult, metric: str = "l2", *, per: float = 1.0,
                 statistic: str = "median") -> Quantity | str:
    """The size of the successful perturbations, one value per fooled sample (the attacks
    stop at the first success, so each is the smallest the attack found): ``metric`` ``"l2"``
    (L2 norm of the rate image, or of the analog image) or ``"flips"`` (changed input bits,
    divided by ``per``, e.g. the number of input bits to get a fraction). ``statistic``
    ``"median"`` (percentile-bootstrap interval) or ``"mean"`` (t-interval). A reason string
    when no sample was fooled."""
    won = result.success & result.clean_correct
    if not won.any():
        return f"{name}: no attacked sample was fooled, so there is no successful perturbation to measure"
    values = {"l2": result.l2, "flips": result.flips}[metric][won] / per
    if statistic == "median":
        return Quantity.bootstrap(name, values)
    if statistic == "mean":
        return Quantity.from_samples(name, values)
    raise ValueError(f"statistic must be 'median' or 'mean', got {statistic!r}")


def dominance(name: str, a: AttackResult, b: AttackResult) -> Quantity | str:
    """How often attack ``a`` beats attack ``b`` on the same samples: a sample is won by ``a``
    when ``a`` fools it and ``b`` does not, or both fool it and ``a`` flips fewer input bits
    (and won by ``b`` in the mirror cases; equal outcomes are ties). The quantity is the
    fraction of the non-tied samples that ``a`` wins, with Wilson's interval over them (a
    sign test: above 0.5 means ``a`` needs fewer flips or fails less often). A reason string
    when every sample ties. Both results must come from the same model and samples."""
    if a.clean_correct.shape != b.clean_correct.shape or not np.array_equal(a.clean_correct, b.clean_correct):
        raise ValueError(f"{name}: the two attacks were not run on the same attacked samples")
    sa, sb = a.success & a.clean_correct, b.success & b.clean_correct
    wins = (sa & ~sb) | (sa & sb & (a.flips < b.flips))
    losses = (sb & ~sa) | (sa & sb & (b.flips < a.flips))
    decided = int(wins.sum() + losses.sum())
    if decided == 0:
        return f"{name}: the two attacks tie on every attacked sample"
    return Quantity.rate(name, int(wins.sum()), decided)


def resolution(a: Quantity, b: Quantity) -> float:
    """Half the width of the 95 % interval of ``a − b`` as the rules compute it (MOVER for two
    independent intervals): a true difference of this size is decided about half the time,
    one of about 1.4 times this size four times in five (normal approximation). The chapter
    quotes it as the smallest effect its run can detect."""
    d = difference(a, b)
    return float(d.high - d.low) / 2


def trap_cells(grid: pd.DataFrame) -> pd.DataFrame:
    """The loss × threshold map pooled over seeds: per (loss, threshold) the clean-correct
    images of the zero-gradient census (``zero_n``, summed over the seeds' models) and how many
    of them had an all-zero input gradient, the attacked samples and how many G2S alone
    fooled, and the two fractions. A grid without ``zero_n`` (older maps) takes the census
    over the attacked samples."""
    grid = grid if "zero_n" in grid else grid.assign(zero_n=grid["attacked"])
    cells = grid.groupby(["loss", "threshold"])[["zero_n", "zero_grad_count", "attacked", "success_g2s_count"]].sum()
    cells["zero_grad"] = cells["zero_grad_count"] / cells["zero_n"].where(cells["zero_n"] > 0)
    cells["success_g2s"] = cells["success_g2s_count"] / cells["attacked"].where(cells["attacked"] > 0)
    return cells


def trap_quantities(grid: pd.DataFrame) -> tuple[Measured, dict[str, float]]:
    """The quantities of the cross-entropy "trap" reading, from the loss × threshold map.

    Over the penultimate thresholds whose CE models classified some image right, the *worst*
    threshold has the largest pooled fraction of clean-correct images with an all-zero input
    gradient and the *best* the smallest (chosen on the point estimates). Measured, each a
    Wilson rate pooled over all seeds' models (this ignores seed-to-seed variation, which
    the chapter shows per seed):

    ``ce_zero_worst`` / ``ce_zero_best``
        the all-zero-gradient fraction under CE at the worst / best threshold (over the
        census images, ``zero_n``);
    ``ce_zero_worst_halved``
        half of ``ce_zero_worst`` (its interval halved), for "cuts it by at least half";
    ``ce_g2s_success_worst`` / ``ce_g2s_success_best``
        the success of G2S without RSF under CE at the worst / best threshold (over the
        attacked samples);
    ``mse_zero_at_worst``
        the all-zero-gradient fraction under MSE at CE's worst threshold.

    A quantity that cannot be measured (no CE or MSE model at that threshold, no correctly
    classified image, a single threshold) comes back as the reason. The second value gives
    the chosen thresholds (``nan`` when there is none)."""
    cells = trap_cells(grid)
    out: Measured = {}
    chosen = {"worst_threshold": float("nan"), "best_threshold": float("nan")}
    names = ("ce_zero_worst", "ce_zero_worst_halved", "ce_zero_best", "ce_g2s_success_worst",
             "ce_g2s_success_best", "mse_zero_at_worst")
    losses = set(cells.index.get_level_values(0))
    ce = cells.loc["ce"] if "ce" in losses else None
    ce = ce[(ce["zero_n"] > 0) & (ce["attacked"] > 0)] if ce is not None else None
    if ce is None or ce.empty:
        why = "the loss x threshold map has no cross-entropy model that classified an attacked sample right"
        return {n: why for n in names}, chosen
    worst = float(ce["zero_grad"].idxmax())
    chosen["worst_threshold"] = worst
    w = ce.loc[worst]
    out["ce_zero_worst"] = Quantity.rate("ce_zero_worst", int(w["zero_grad_count"]), int(w["zero_n"]))
    q = out["ce_zero_worst"]
    out["ce_zero_worst_halved"] = Quantity("ce_zero_worst_halved", q.estimate / 2, q.low / 2, q.high / 2, q.n, q.method)
    out["ce_g2s_success_worst"] = Quantity.rate("ce_g2s_success_worst", int(w["success_g2s_count"]), int(w["attacked"]))
    if len(ce) < 2:
        why = "the escape needs a second penultimate threshold under cross-entropy; this run had one"
        out.update({n: why for n in ("ce_zero_best", "ce_g2s_success_best")})
    else:
        best = float(ce["zero_grad"].idxmin())
        if best == worst:  # every threshold gave the same fraction: take another one
            best = float(next(t for t in ce.index if float(t) != worst))
        chosen["best_threshold"] = best
        b = ce.loc[best]
        out["ce_zero_best"] = Quantity.rate("ce_zero_best", int(b["zero_grad_count"]), int(b["zero_n"]))
        out["ce_g2s_success_best"] = Quantity.rate("ce_g2s_success_best", int(b["success_g2s_count"]), int(b["attacked"]))
    mse = cells.loc["mse"] if "mse" in losses else None
    if mse is None:
        out["mse_zero_at_worst"] = "the loss x threshold map ran no MSE-trained model"
    elif worst not in mse.index or int(mse.loc[worst, "zero_n"]) == 0:
        out["mse_zero_at_worst"] = (f"no MSE-trained model at threshold {worst:g} classified an image right"
                                    if worst in mse.index else f"the map ran no MSE-trained model at threshold {worst:g}")
    else:
        m = mse.loc[worst]
        out["mse_zero_at_worst"] = Quantity.rate("mse_zero_at_worst", int(m["zero_grad_count"]), int(m["zero_n"]))
    return out, chosen
