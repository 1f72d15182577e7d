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

from compendium.attacks.spike import AttackResult, output_loss, spike_attack, zero_gradient
from compendium.book.quantities import Quantity
from compendium.learning import History, fit
from compendium.progress import progress
from compendium.spiking.counters import OpCounter
from compendium.spiking.nets import SpikingClassifier, ann_mlp, spiking_mlp

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
                     "flips_g2s_rsf": both.summary()["mean_flips"], "train_loss": hist.last("train_loss"),
                     # counts behind the fractions (all over the same clean-correct samples)
                     "attacked": int(correct.sum()), "zero_grad_count": int(zero[correct].sum()),
                     "success_g2s_count": int(g2s_only.success.sum())})
    return pd.DataFrame(rows)


@torch.no_grad()
def hidden_rate(net: SpikingClassifier, spikes: Tensor) -> float:
    """Mean firing rate of the penultimate (hidden) neuron layer on spike input ``[T, N, ...]``."""
    with OpCounter(net) as counter:
        net.forward_spikes(spikes)
    layer = list(counter.spikes.values())[-2]
    return layer.spikes / layer.neuron_steps


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


def trap_cells(grid: pd.DataFrame) -> pd.DataFrame:
    """The loss × threshold map pooled over seeds: per (loss, threshold) the attacked samples
    (clean-correct, summed over the seeds' models), how many of them had an all-zero input
    gradient and how many G2S alone fooled, and the two fractions."""
    cells = grid.groupby(["loss", "threshold"])[["attacked", "zero_grad_count", "success_g2s_count"]].sum()
    cells["zero_grad"] = cells["zero_grad_count"] / cells["attacked"].where(cells["attacked"] > 0)
    cells["success_g2s"] = cells["success_g2s_count"] / cells["attacked"].where(cells["attacked"] > 0)
    return cells


def trap_quantities(grid: pd.DataFrame) -> tuple[Measured, dict[str, float]]:
    """The quantities of the cross-entropy "trap" reading, from the loss × threshold map.

    Over the penultimate thresholds whose CE models classified some attacked sample right,
    the *worst* threshold has the largest pooled fraction of samples with an all-zero input
    gradient and the *best* the smallest (chosen on the point estimates). Measured, each a
    Wilson rate over the attacked samples of all seeds' models (this pools seeds and so
    ignores seed-to-seed variation):

    ``ce_zero_worst`` / ``ce_zero_best``
        the all-zero-gradient fraction under CE at the worst / best threshold;
    ``ce_zero_worst_halved``
        half of ``ce_zero_worst`` (its interval halved), for "cuts it by at least half";
    ``ce_g2s_success_worst`` / ``ce_g2s_success_best``
        the success of G2S without RSF under CE at the worst / best threshold;
    ``mse_zero_at_worst``
        the all-zero-gradient fraction under MSE at CE's worst threshold.

    A quantity that cannot be measured (no CE or MSE model at that threshold, no attacked
    sample, a single threshold) comes back as the reason. The second value gives the chosen
    thresholds (``nan`` when there is none)."""
    cells = trap_cells(grid)
    out: Measured = {}
    chosen = {"worst_threshold": float("nan"), "best_threshold": float("nan")}
    names = ("ce_zero_worst", "ce_zero_worst_halved", "ce_zero_best", "ce_g2s_success_worst",
             "ce_g2s_success_best", "mse_zero_at_worst")
    losses = set(cells.index.get_level_values(0))
    ce = cells.loc["ce"] if "ce" in losses else None
    ce = ce[ce["attacked"] > 0] if ce is not None else None
    if ce is None or ce.empty:
        why = "the loss x threshold map has no cross-entropy model that classified an attacked sample right"
        return {n: why for n in names}, chosen
    worst = float(ce["zero_grad"].idxmax())
    chosen["worst_threshold"] = worst
    w = ce.loc[worst]
    out["ce_zero_worst"] = Quantity.rate("ce_zero_worst", int(w["zero_grad_count"]), int(w["attacked"]))
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
        out["ce_zero_best"] = Quantity.rate("ce_zero_best", int(b["zero_grad_count"]), int(b["attacked"]))
        out["ce_g2s_success_best"] = Quantity.rate("ce_g2s_success_best", int(b["success_g2s_count"]), int(b["attacked"]))
    mse = cells.loc["mse"] if "mse" in losses else None
    if mse is None:
        out["mse_zero_at_worst"] = "the loss x threshold map ran no MSE-trained model"
    elif worst not in mse.index or int(mse.loc[worst, "attacked"]) == 0:
        out["mse_zero_at_worst"] = (f"no MSE-trained model at threshold {worst:g} classified an attacked sample right"
                                    if worst in mse.index else f"the map ran no MSE-trained model at threshold {worst:g}")
    else:
        m = mse.loc[worst]
        out["mse_zero_at_worst"] = Quantity.rate("mse_zero_at_worst", int(m["zero_grad_count"]), int(m["attacked"]))
    return out, chosen
