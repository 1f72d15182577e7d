"""The hybrid-plasticity chapter's three experiments, as functions.

1. Fault tolerance: damage a trained network (zero a fraction of its hidden synapses), then
   measure accuracy as it is (HP/LP traces keep adapting online, without labels, as in the
   official code) and after recovery from a few labelled samples; plus the official code's
   own fault-tolerance test, accuracy under input noise.
2. Few-shot: N-way K-shot episodes on held-out Omniglot characters; the HP output layer binds
   support labels into its Hebbian trace within the episode (the label is fed as current);
   GP baselines: the same net without a trace (it cannot use the support set, context only),
   and two readouts of a feature extractor trained by ordinary classification of the training
   characters: a linear readout fitted to the support set by gradient steps, and the nearest
   class mean of the support features (prototypes, Snell et al. 2017), the strongest simple
   few-shot baseline.
3. Multiple tasks: permuted-pixel tasks in sequence; accuracy on every task after each.
4. Classification (the official fully connected demo on Fashion-MNIST): GP, LP and HP MLPs.

Fair comparison: every MLP variant gets the same learning-rate trials, chosen on a validation
split of its training data, each training seed on its own split (:func:`tune_mlp_lr`), so the
intervals over seeds include the selection's variance; the HP few-shot net and the GP feature
extractor get the same trials, chosen on episodes of held-out *training* characters
(:func:`tune_fewshot_lr`). The claims of the chapter read quantities with 95 % intervals built
here from the per-seed or per-episode results (:func:`fault_quantities`, :func:`task_quantities`,
:func:`fewshot_quantity`).
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compendium import smoke
from compendium.book.quantities import Quantity, difference
from compendium.learning import History, choose_rate, evaluate, fit, validation_split
from compendium.learning.train import resolve_device
from compendium.plasticity.hybrid import HybridMLP, PlasticLIF, firing_rates, two_timescale_adam
from compendium.progress import progress

Data = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class Setup:
    hidden: int = 256
    T: int = 5
    decay: float = 0.4
    threshold: float = 0.4
    trace_decay: float = 0.99
    epochs: int = 5
    lr: float = 1e-3
    meta_lr: float = 5e-4
    batch_size: int = 100
    device: str = "cpu"


    def plastic_kw(self) -> dict[str, Any]:
        return {"decay": self.decay, "threshold": self.threshold, "trace_decay": self.trace_decay}

    def with_lr(self, lr: float) -> "Setup":
        """The same setup at global learning rate ``lr``; the meta-local rate keeps its ratio to
        it (``meta_lr / lr``, 0.5 in the official code), so HP's two timescales stay as declared."""
        return replace(self, lr=float(lr), meta_lr=self.meta_lr * float(lr) / self.lr)


def train_mlp(mode: str, train: Data, test: Data | None, setup: Setup, *, seed: int = 0,
              in_features: int = 784, encoding: str = "direct") -> tuple[HybridMLP, History]:
    torch.manual_seed(seed)
    model = HybridMLP((in_features, setup.hidden, 10), mode, T=setup.T, encoding=encoding, **setup.plastic_kw())
    hist = fit(model, train, test=test, epochs=setup.epochs, lr=setup.lr, batch_size=setup.batch_size,
               optimizer=two_timescale_adam(model, setup.meta_lr), device=setup.device, seed=seed,
               desc=f"{mode.upper()} seed {seed}", show_progress=False)
    return model, hist


def init_firing_rates(modes: tuple[str, ...], x: Tensor, setup: Setup, *, seed: int = 0) -> dict[str, float]:
    """The hidden layer's mean firing rate of each mode's MLP at its initialisation (seed ``seed``),
    on inputs ``x`` — the check that every variant fires, so that none is a baseline that cannot
    learn for a trivial reason (a silent layer passes no surrogate gradient)."""
    out = {}
    for mode in modes:
        torch.manual_seed(seed)
        model = HybridMLP((x[0].numel(), setup.hidden, 10), mode, T=setup.T, **setup.plastic_kw()).to(setup.device)
        out[mode] = firing_rates(model, x.to(setup.device))[0]
    return out


Choice = dict[tuple[str, int], float]  # {(mode, seed): learning rate}


def tune_mlp_lr(modes: tuple[str, ...], train: Data, setup: Setup, lrs: tuple[float, ...], seeds: Sequence[int], *,
                tune_epochs: int, per_seed: bool = True, val_fraction: float = 0.1,
                in_features: int = 784) -> tuple[pd.DataFrame, Choice]:
    """The same learning-rate trials for every mode (the idea of
    :func:`compendium.learning.compare_tuned`, with HP's two-timescale optimiser).

    For a seed ``s``, each mode trains once per rate in ``lrs`` (meta-local rate scaled with it,
    :meth:`Setup.with_lr`) for ``tune_epochs`` on the training part of a ``val_fraction`` split of
    ``train`` drawn with seed ``s``, from initialisation ``s``, and keeps the rate with the best
    validation accuracy (:func:`compendium.learning.choose_rate`; ties: the smaller rate); the
    test set is never looked at. With ``per_seed`` every seed in ``seeds`` tunes on its own split,
    so a seed's final model (:func:`train_modes`) carries its own selection and the spread over
    seeds includes the selection's variance: a choice between rates whose validation accuracies
    differ by a few images then moves the per-seed results, and a paired interval over the seeds
    shows it, where one choice shared by every seed hides it. Without ``per_seed`` the first seed
    tunes and every seed takes its choice. A single rate is used as given, without trials.
    Returns the trials (``mode, seed, lr, val_acc``) and ``{(mode, seed): chosen lr}``."""
    if not lrs:
        raise ValueError("tune_mlp_lr needs at least one learning rate")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("tune_mlp_lr needs at least one seed")
    if len(lrs) == 1:
        return pd.DataFrame(columns=["mode", "seed", "lr", "val_acc"]), {(m, s): float(lrs[0])
                                                                         for m in modes for s in seeds}
    rows, chosen = [], {}
    for s in (seeds if per_seed else seeds[:1]):
        fit_train, val = validation_split(train, val_fraction, s)
        for mode in modes:
            scores = []
            for lr in sorted(float(v) for v in lrs):
                model, _ = train_mlp(mode, fit_train, None, replace(setup.with_lr(lr), epochs=tune_epochs), seed=s,
                                     in_features=in_features)
                acc = evaluate(model, val, device=setup.device)["acc"]
                rows.append({"mode": mode, "seed": s, "lr": lr, "val_acc": acc})
                scores.append((lr, acc))
            chosen[(mode, s)] = choose_rate(scores)
    if not per_seed:
        chosen = {(m, s): chosen[(m, seeds[0])] for m in modes for s in seeds}
    return pd.DataFrame(rows), chosen


def choice_table(trials: pd.DataFrame, chosen: Choice) -> pd.DataFrame:
    """The tuning trials at a glance: per rate (rows) and mode (columns), the mean validation
    accuracy over the seeds that tuned, and how many of them chose that rate (``"0.9212 (chosen
    by 3 of 5)"``); a rate no seed chose shows its accuracy alone."""
    if trials.empty:
        return pd.DataFrame()
    mean = trials.groupby(["lr", "mode"])["val_acc"].mean().unstack()
    tuned = set(trials["seed"].astype(int))
    picks = Counter((m, lr) for (m, s), lr in chosen.items() if s in tuned)
    out = mean.astype(object).copy()
    for mode in mean.columns:
        for lr in mean.index:
            n = picks[(mode, lr)]
            out.loc[lr, mode] = f"{mean.loc[lr, mode]:.4f}" + (f" (chosen by {n} of {len(tuned)})" if n else "")
    return out


def train_modes(modes: tuple[str, ...], train: Data, test: Data, setup: Setup, chosen: Choice,
                seeds: list[int], *, in_features: int = 784) -> tuple[dict[tuple[str, int], HybridMLP], pd.DataFrame]:
    """Each mode under every seed at that seed's chosen learning rate (``chosen[(mode, seed)]``,
    :func:`tune_mlp_lr`); returns the trained models ``{(mode, seed): model}`` and their clean
    test accuracies (``mode, seed, lr, test_acc``). The test set is evaluated once, after
    training, on a copy of each model (an HP or LP trace keeps adapting to the unlabelled test
    stream, as in the official code; the copy leaves the returned model's trace as training left it)."""
    missing = [(m, s) for m in modes for s in seeds if (m, s) not in chosen]
    if missing:
        raise ValueError(f"no chosen learning rate for {missing}; tune these seeds (tune_mlp_lr) first")
    models, rows = {}, []
    for mode in modes:
        for s in seeds:
            lr_ms = chosen[(mode, s)]
            model, _ = train_mlp(mode, train, None, setup.with_lr(lr_ms), seed=s, in_features=in_features)
            models[(mode, s)] = model
            rows.append({"mode": mode, "seed": s, "lr": lr_ms, "test_acc": test_accuracy(model, test, setup.device)})
    return models, pd.DataFrame(rows)


def test_accuracy(model: nn.Module, test: Data, device: str = "cpu") -> float:
    """Clean test accuracy, evaluated on a copy (a plastic trace adapts to the test stream)."""
    return float(evaluate(copy.deepcopy(model), test, device=device)["acc"])


def accuracy_quantities(acc: pd.DataFrame, prefix: str) -> list[Quantity]:
    """``<prefix><mode>``: a mode's clean test accuracy, mean over seeds with a t-interval
    (samples in seed order; the modes share seeds and data order), of :func:`train_modes`' table."""
    return [Quantity.from_samples(f"{prefix}{mode}", values)
            for mode, (_, values) in _seed_samples(acc, "test_acc").items()]


def damaged(model: HybridMLP, fraction: float, seed: int = 0) -> HybridMLP:
    """A copy with ``fraction`` of the hidden layer's synaptic weights zeroed at random."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    out = copy.deepcopy(model)
    w = out.hidden.linear.weight
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w.mul_((torch.rand(w.shape, generator=g) >= fraction).to(w.dtype).to(w.device))
    return out


def recovered(model: HybridMLP, few: Data, setup: Setup, steps: int = 20, lr: float = 2e-4, seed: int = 0) -> HybridMLP:
    """A copy trained for ``steps`` full-batch Adam steps at ``lr`` on the few labelled samples
    ``few`` (what each model can learn from them: GP and HP weights, HP meta-parameters at
    ``lr · meta_lr / setup.lr``, LP readout), through :func:`compendium.learning.fit` (one
    epoch of one batch per step)."""
    out = copy.deepcopy(model)
    fit(out, few, epochs=steps, lr=lr, batch_size=len(few[1]), optimizer=two_timescale_adam(out, setup.meta_lr * lr / setup.lr),
        device=setup.device, seed=seed, desc="recover", show_progress=False, metric=None)
    return out.eval()


def fault_tolerance(models: dict[tuple[str, int], HybridMLP], test: Data, few: Data, setup: Setup, *,
                    fractions: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7), steps: int = 20, lr: float = 2e-4,
                    show_progress: bool = True) -> pd.DataFrame:
    """Per (mode, seed, fraction): accuracy after damage and after few-sample recovery."""
    rows = []
    grid = [(key, f) for key in models for f in fractions]
    for (mode, seed), f in progress(grid, desc="fault tolerance", enabled=show_progress):
        hit = damaged(models[(mode, seed)], f, seed=1000 + seed)
        acc_hit = evaluate(hit, test, device=setup.device)["acc"]
        fixed = recovered(hit, few, setup, steps=steps, lr=lr, seed=seed)
        rows.append({"mode": mode, "seed": seed, "fraction": f, "acc_damaged": acc_hit,
                     "acc_recovered": evaluate(fixed, test, device=setup.device)["acc"]})
    return pd.DataFrame(rows)


def _seed_samples(df: pd.DataFrame, col: str) -> dict[str, tuple[list[int], list[float]]]:
    """``{mode: (seeds, values)}`` of column ``col``, seeds ascending; every mode must have the
    same seeds, so that sample i of each mode comes from the same seed (paired comparisons)."""
    out = {str(m): (sub["seed"].astype(int).tolist(), sub[col].astype(float).tolist())
           for m, sub in df.sort_values("seed").groupby("mode")}
    seed_lists = {tuple(s) for s, _ in out.values()}
    if len(seed_lists) > 1:
        raise ValueError(f"modes ran different seeds ({sorted(seed_lists)}); per-seed samples would not pair")
    return out


def fault_quantities(ft: pd.DataFrame, fraction: float) -> list[Quantity]:
    """What the fault-tolerance claim reads, at damage ``fraction`` (of :func:`fault_tolerance`'s
    table): for each mode, ``ft_damaged_<mode>`` (accuracy right after zeroing the synapses) and
    ``ft_recovered_<mode>`` (after the few-sample recovery), each the mean over training seeds
    with a t-interval. Samples are in seed order; a seed's models share the damage mask, so the
    modes pair by seed."""
    at = ft[np.isclose(ft["fraction"].astype(float), float(fraction))]
    if at.empty:
        raise ValueError(f"no fault-tolerance rows at fraction {fraction}; fractions run: {sorted(ft['fraction'].unique())}")
    out = []
    for col, label in (("acc_damaged", "damaged"), ("acc_recovered", "recovered")):
        for mode, (_, values) in _seed_samples(at, col).items():
            out.append(Quantity.from_samples(f"ft_{label}_{mode}", values))
    return out


def task_quantities(mt: pd.DataFrame) -> list[Quantity]:
    """What the multi-task claim reads (of :func:`sequential_tasks`' rows): after the last task,
    each seed's accuracy averaged over all tasks; ``mt_<mode>`` is the mean over seeds with a
    t-interval, samples in seed order (the modes share seeds and task permutations)."""
    last = mt[mt["after_task"] == mt["after_task"].max()]
    per_seed = last.groupby(["mode", "seed"], as_index=False)["acc"].mean()
    return [Quantity.from_samples(f"mt_{mode}", values) for mode, (_, values) in _seed_samples(per_seed, "acc").items()]


def paired_difference(a: Quantity, b: Quantity) -> Quantity:
    """``a − b`` with its 95 % interval: paired when both carry samples of the same replicates
    (seeds, test episodes), else the MOVER combination, as the claims' ordering rules take it."""
    paired = a.samples is not None and b.samples is not None and len(a.samples) == len(b.samples)
    return difference(a, b, paired=paired)


def half_width(q: Quantity) -> float:
    """The larger side of ``q``'s 95 % interval: at the run's spread, the smallest difference
    (or distance from a published value) the interval can decide; 0 for a single run."""
    return float(max(q.estimate - q.low, q.high - q.estimate))


def noise_robustness(models: dict[tuple[str, int], HybridMLP], test: Data, setup: Setup, *,
                     variances: tuple[float, ...] = (0.0, 0.02, 0.04, 0.06, 0.1), seed: int = 0) -> pd.DataFrame:
    """Accuracy under additive Gaussian pixel noise (clipped to [0, 1]; the official code's
    fault-tolerance test uses variances 0.01·i)."""
    rows = []
    g = torch.Generator().manual_seed(seed)
    noises = {v: torch.randn(test[0].shape, generator=g) * v ** 0.5 for v in variances}
    for (mode, s), model in models.items():
        for v, n in noises.items():
            noisy = ((test[0].cpu() + n).clamp(0, 1).to(setup.device), test[1])
            rows.append({"mode": mode, "seed": s, "variance": v, "acc": evaluate(copy.deepcopy(model), noisy, device=setup.device)["acc"]})
    return pd.DataFrame(rows)


# --- few-shot ------------------------------------------------------------------------------------
def split_classes(labels: Tensor, n_test_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint training and held-out class ids."""
    classes = np.unique(labels.numpy())
    rng = np.random.default_rng(seed)
    perm = rng.permutation(classes)
    return np.sort(perm[n_test_classes:]), np.sort(perm[:n_test_classes])


def episodes(images: Tensor, labels: Tensor, classes: np.ndarray, n_way: int, k_shot: int, n_episodes: int,
             seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``n_episodes`` episodes: support ``[E, N·K, ...]`` with labels ``[E, N·K]`` in 0..N-1
    (shuffled), one query per episode ``[E, ...]`` with its label ``[E]``."""
    if len(classes) < n_way:
        raise ValueError(f"{n_way}-way episodes need at least {n_way} classes, got {len(classes)}")
    if smoke.active():  # a few episodes (the full count is remembered for the cost table)
        n_episodes = smoke.shrink("few-shot episodes", n_episodes, n_episodes)[0]
    rng = np.random.default_rng(seed)
    by_class = {int(c): np.flatnonzero(labels.numpy() == c) for c in classes}
    # the draws are made episode by episode (the generator's stream fixes the episodes); the
    # images are gathered once at the end, one indexing per tensor instead of one per episode
    n_items = n_way * k_shot
    support = np.empty((n_episodes, n_items), dtype=np.int64)
    tags = np.empty((n_episodes, n_items), dtype=np.int64)
    query = np.empty(n_episodes, dtype=np.int64)
    query_tag = np.empty(n_episodes, dtype=np.int64)
    way_tags = np.repeat(np.arange(n_way, dtype=np.int64), k_shot)
    for e in range(n_episodes):
        chosen = rng.choice(classes, size=n_way, replace=False)
        items = np.concatenate([rng.choice(by_class[int(c)], size=k_shot, replace=False) for c in chosen])
        order = rng.permutation(n_items)
        target = int(rng.integers(n_way))
        pool = by_class[int(chosen[target])]
        # the query is not a support drawing (a broadcast comparison: np.isin is 5x slower here)
        query[e] = rng.choice(pool[(pool[:, None] != items).all(1)], size=1)[0]
        support[e], tags[e], query_tag[e] = items[order], way_tags[order], target
    return images[torch.from_numpy(support)], torch.from_numpy(tags), images[torch.from_numpy(query)], \
        torch.from_numpy(query_tag)


class Features(nn.Module):
    """A small conv feature extractor (non-spiking tanh, as the official few-shot code's)."""

    def __init__(self, width: int = 32, out_features: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, width, 3, stride=2, padding=1), nn.Tanh(),
                                 nn.Conv2d(width, width, 3, stride=2, padding=1), nn.Tanh(),
                                 nn.Conv2d(width, width, 3, stride=2, padding=1), nn.Tanh(),
                                 nn.Flatten(), nn.LazyLinear(out_features), nn.Tanh())

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class FewShotNet(nn.Module):
    """Features → plastic spiking output layer of ``n_way`` neurons, one step per support item
    (its label fed as current ``bind · onehot``) and a last step for the query, whose membrane
    (divided by θ) gives the logits. Each episode has its own trace (``per_sample``)."""

    def __init__(self, n_way: int, mode: str = "hp", width: int = 32, features: int = 256, bind: float = 1.0,
                 decay: float = 0.2, threshold: float = 0.5, trace_decay: float = 0.99):
        super().__init__()
        self.n_way, self.bind = n_way, bind
        self.features = Features(width, features)
        self.output = PlasticLIF(features, n_way, mode, decay=decay, threshold=threshold, trace_decay=trace_decay,
                                 persistent=False, per_sample=True, alpha=1.0, beta=0.5)

    def forward(self, support: Tensor, support_y: Tensor, query: Tensor) -> Tensor:
        E, S = support.shape[:2]
        feats = self.features(torch.cat([support.flatten(0, 1), query])).reshape(-1, self.output.linear.in_features)
        f_sup, f_q = feats[: E * S].reshape(E, S, -1), feats[E * S:]
        seq = torch.cat([f_sup, f_q.unsqueeze(1)], 1).transpose(0, 1)  # [S+1, E, F]
        labels = F.one_hot(support_y, self.n_way).to(seq.dtype).transpose(0, 1)  # [S, E, N]
        extra = torch.cat([self.bind * labels, torch.zeros_like(labels[:1])])
        _, u = self.output(seq, extra=extra, return_membrane=True)
        return u / self.output.threshold


def meta_train(model: FewShotNet, images: Tensor, labels: Tensor, classes: np.ndarray, *, k_shot: int,
               n_episodes: int, batch: int = 16, lr: float = 1e-3, meta_lr: float = 1e-3, seed: int = 0,
               device: str = "cpu", show_progress: bool = True) -> list[float]:
    """Train on ``n_episodes`` episodes of the training classes, ``batch`` episodes per step, one
    pass (:func:`compendium.learning.fit` with the episodes' support, support labels and query
    as the model's inputs and the query label as target); returns the per-step query accuracy."""
    torch.manual_seed(seed)
    sx, sy, qx, qy = episodes(images, labels, classes, model.n_way, k_shot, n_episodes, seed=seed)
    dev = resolve_device(device)
    model.to(dev)
    model(*(t[:1].to(dev) for t in (sx, sy, qx)))  # materialise the lazy layer
    accs: list[float] = []
    fit(model, (sx, sy, qx, qy), epochs=1, lr=lr, batch_size=batch, optimizer=two_timescale_adam(model, meta_lr),
        device=device, seed=seed, desc=f"meta-train {model.output.mode.upper()}", show_progress=show_progress,
        on_step=lambda r: accs.append(r["acc"]))
    return accs


Episodes = tuple[Tensor, Tensor, Tensor, Tensor]


@torch.no_grad()
def episode_hits(model: FewShotNet, episodes_: Episodes, device: str = "cpu", batch: int = 100) -> np.ndarray:
    """Whether each episode's query was answered correctly (``bool [E]``, episode order)."""
    sx, sy, qx, qy = episodes_
    model.eval()
    hits = []
    for i in range(0, len(qy), batch):
        out = model(sx[i:i + batch].to(device), sy[i:i + batch].to(device), qx[i:i + batch].to(device))
        hits.append((out.argmax(1).cpu() == qy[i:i + batch]).numpy())
    return np.concatenate(hits)


def episode_accuracy(model: FewShotNet, episodes_: Episodes, device: str = "cpu", batch: int = 100) -> float:
    return float(episode_hits(model, episodes_, device, batch).mean())


def pretrain_classifier(images: Tensor, labels: Tensor, classes: np.ndarray, *, epochs: int = 10, width: int = 32,
                        features: int = 256, lr: float = 1e-3, seed: int = 0, device: str = "cpu") -> Features:
    """GP route: a feature extractor trained by ordinary classification of the training classes."""
    torch.manual_seed(seed)
    keep = np.isin(labels.numpy(), classes)
    remap = {int(c): i for i, c in enumerate(classes)}
    y = torch.tensor([remap[int(v)] for v in labels[keep]])
    feats = Features(width, features)
    model = nn.Sequential(feats, nn.Linear(features, len(classes)))
    model(images[:2])
    fit(model, (images[keep], y), epochs=epochs, lr=lr, batch_size=64, device=device, seed=seed,
        desc="GP features", show_progress=False)
    return feats.eval()


@torch.no_grad()
def _episode_features(features: nn.Module, episodes_: Episodes, device: str) -> tuple[Tensor, Tensor]:
    sx, _, qx, _ = episodes_
    features.eval()
    f_sup = features(sx.flatten(0, 1).to(device)).reshape(sx.shape[0], sx.shape[1], -1)
    return f_sup, features(qx.to(device))


class EpisodeHeads(nn.Module):
    """One linear readout per episode, each applied to its own episode's features:
    ``out[e] = f[e] W_eᵀ + b_e``. Initialised as ``n_episodes`` successive ``nn.Linear``
    draws, so that training all of them at once (the sum of the per-episode losses) gives each
    head the updates it would get alone."""

    def __init__(self, n_episodes: int, features: int, n_way: int):
        super().__init__()
        heads = [nn.Linear(features, n_way) for _ in range(n_episodes)]
        self.weight = nn.Parameter(torch.stack([h.weight.detach() for h in heads]))  # [E, N, F]
        self.bias = nn.Parameter(torch.stack([h.bias.detach() for h in heads]))  # [E, N]

    def forward(self, episode: Tensor, f: Tensor) -> Tensor:
        """``episode`` [b] (indices), ``f`` [b, S, F] -> logits [b, S, N]."""
        return torch.einsum("bsf,bnf->bsn", f, self.weight[episode]) + self.bias[episode].unsqueeze(1)


def _per_episode_loss_sum(out: Tensor, y: Tensor) -> Tensor:
    """Σ_e mean_s CE(out[e, s], y[e, s]): the heads' losses added, so that each head's gradient
    is that of its own episode's mean loss."""
    return F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="sum") / out.shape[1]


def finetune_hits(features: Features, episodes_: Episodes, n_way: int, *, steps: int = 30, lr: float = 0.1,
                  device: str = "cpu", seed: int = 0) -> np.ndarray:
    """GP at test time: a fresh linear readout fitted to each episode's support set by ``steps``
    full-batch SGD steps (cross-entropy, no momentum) on the frozen features, then the query
    classified. All episodes' readouts are trained together as one :class:`EpisodeHeads`
    through :func:`compendium.learning.fit` (their losses are independent, so this is the
    per-episode fit, batched). Per-episode hits (``bool [E]``)."""
    _, sy, _, qy = episodes_
    f_sup, f_q = _episode_features(features, episodes_, device)
    torch.manual_seed(seed)
    heads = EpisodeHeads(len(qy), f_sup.shape[-1], n_way)
    index = torch.arange(len(qy))
    fit(heads, (index, f_sup.cpu(), sy), epochs=steps, lr=lr, batch_size=len(qy),
        optimizer=lambda params, lr: torch.optim.SGD(params, lr=lr), loss_fn=_per_episode_loss_sum, metric=None,
        device=device, seed=seed, desc="fine-tune readouts", show_progress=False)
    with torch.no_grad():
        out = heads(index.to(f_q.device), f_q.unsqueeze(1)).squeeze(1)
    return (out.argmax(1).cpu() == qy).numpy()


def finetune_accuracy(features: Features, episodes_: Episodes, n_way: int, *, steps: int = 30, lr: float = 0.1,
                      device: str = "cpu") -> float:
    return float(finetune_hits(features, episodes_, n_way, steps=steps, lr=lr, device=device).mean())


def prototype_hits(features: nn.Module, episodes_: Episodes, n_way: int, device: str = "cpu") -> np.ndarray:
    """Nearest class mean (prototypes; Snell, Swersky & Zemel, NeurIPS 2017, eq. 1–2, without
    meta-training): each class's prototype is the mean feature of its support drawings,
    :math:`c_k = \\frac{1}{|S_k|}\\sum_{x \\in S_k} f(x)`, and the query takes the class of the
    nearest prototype in squared Euclidean distance. No parameter is fitted at test time.
    Per-episode hits (``bool [E]``)."""
    _, sy, _, qy = episodes_
    f_sup, f_q = _episode_features(features, episodes_, device)
    onehot = F.one_hot(sy.to(device), n_way).to(f_sup.dtype)  # [E, S, N]
    protos = onehot.transpose(1, 2) @ f_sup / onehot.sum(1).unsqueeze(-1)  # [E, N, F]
    dist = ((protos - f_q.unsqueeze(1)) ** 2).sum(-1)  # [E, N]
    return (dist.argmin(1).cpu() == qy).numpy()


def fewshot_quantity(name: str, hits: np.ndarray) -> Quantity:
    """Query accuracy over the test episodes: a rate with Wilson's interval, carrying the
    per-episode outcomes (0/1, episode order) as samples, so that two models answering the same
    episodes are compared by a paired interval (per-episode differences, paired t)."""
    h = np.asarray(hits, dtype=float)
    return replace(Quantity.rate(name, float(h.sum()), int(h.size)), samples=tuple(h.tolist()))


def tune_fewshot_lr(images: Tensor, labels: Tensor, classes: np.ndarray, lrs: tuple[float, ...], *, n_way: int,
                    k_shot: int, val_classes: int, tune_episodes: int, tune_feature_epochs: int,
                    val_episodes: int = 200, bind: float = 1.0, seed: int = 0,
                    device: str = "cpu") -> tuple[pd.DataFrame, dict[str, float]]:
    """The same learning-rate trials for the HP few-shot net and the GP feature extractor.

    ``val_classes`` of the *training* characters are set aside; each learner trains once per rate
    in ``lrs`` on the rest (HP: ``tune_episodes`` meta-training episodes, meta-local rate = rate;
    GP: ``tune_feature_epochs`` epochs of classification) and is scored on ``val_episodes``
    episodes of the set-aside characters (HP: its query accuracy; GP: the prototype readout of
    its features, which has no parameter of its own). The held-out test characters are never
    looked at. Ties: the smaller rate (:func:`compendium.learning.choose_rate`). Returns the trials and ``{"hp": lr, "gp": lr}``."""
    if len(lrs) == 1:
        return pd.DataFrame(columns=["model", "lr", "val_acc"]), {"hp": float(lrs[0]), "gp": float(lrs[0])}
    fit_cls, val_cls = split_classes(torch.as_tensor(classes), val_classes, seed=seed + 1)
    val_eps = episodes(images, labels, val_cls, n_way, k_shot, val_episodes, seed=seed + 777)
    rows, chosen = [], {}
    for key in ("hp", "gp"):
        scores = []
        for lr in sorted(float(v) for v in lrs):
            if key == "hp":
                torch.manual_seed(seed)
                net = FewShotNet(n_way, "hp", bind=bind)
                meta_train(net, images, labels, fit_cls, k_shot=k_shot, n_episodes=tune_episodes, lr=lr, meta_lr=lr,
                           seed=seed, device=device, show_progress=False)
                acc = episode_accuracy(net, val_eps, device=device)
            else:
                feats = pretrain_classifier(images, labels, fit_cls, epochs=tune_feature_epochs, lr=lr, seed=seed,
                                            device=device)
                acc = float(prototype_hits(feats, val_eps, n_way, device=device).mean())
            rows.append({"model": key, "lr": lr, "val_acc": acc})
            scores.append((lr, acc))
        chosen[key] = choose_rate(scores)
    return pd.DataFrame(rows), chosen


# --- multiple tasks -------------------------------------------------------------------------------
def permuted_tasks(train: Data, test: Data, n_tasks: int, seed: int = 0) -> list[tuple[Data, Data]]:
    """Task 0 is the original pixel order; each later task a fixed random pixel permutation."""
    g = torch.Generator().manual_seed(seed)
    n_pix = train[0][0].numel()
    tasks = []
    for t in range(n_tasks):
        perm = torch.arange(n_pix) if t == 0 else torch.randperm(n_pix, generator=g)
        apply = lambda x: x.flatten(1)[:, perm].reshape(x.shape)
        tasks.append(((apply(train[0]), train[1]), (apply(test[0]), test[1])))
    return tasks


def sequential_tasks(mode: str, tasks: list[tuple[Data, Data]], setup: Setup, *, epochs_per_task: int = 1,
                     seed: int = 0) -> pd.DataFrame:
    """Train on the tasks in order; after each, test on every task seen so far."""
    torch.manual_seed(seed)
    model = HybridMLP((tasks[0][0][0][0].numel(), setup.hidden, 10), mode, T=setup.T, **setup.plastic_kw())
    rows = []
    for i, (train, _) in enumerate(tasks):
        fit(model, train, epochs=epochs_per_task, lr=setup.lr, batch_size=setup.batch_size,
            optimizer=two_timescale_adam(model, setup.meta_lr), device=setup.device, seed=seed + i,
            desc=f"{mode.upper()} task {i}", show_progress=False)
        for j in range(i + 1):
            acc = evaluate(copy.deepcopy(model), tasks[j][1], device=setup.device)["acc"]
            rows.append({"mode": mode, "seed": seed, "after_task": i, "task": j, "acc": acc})
    return pd.DataFrame(rows)
