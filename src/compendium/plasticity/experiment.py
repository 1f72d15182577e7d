"""The hybrid-plasticity chapter's three experiments, as functions.

1. Fault tolerance: damage a trained network (zero a fraction of its hidden synapses), then
   measure accuracy as it is (HP/LP traces keep adapting online, without labels, as in the
   official code) and after recovery from a few labelled samples; plus the official code's
   own fault-tolerance test, accuracy under input noise.
2. Few-shot: N-way K-shot episodes on held-out Omniglot characters; the HP output layer binds
   support labels into its Hebbian trace within the episode (the label is fed as current);
   GP baselines: the same net without a trace (it cannot use the support set) and a GP net
   whose readout is fitted to the support set by gradient steps.
3. Multiple tasks: permuted-pixel tasks in sequence; accuracy on every task after each.

The claims of the chapter read quantities with 95 % intervals built here from the per-seed
results (:func:`fault_quantities`, :func:`task_quantities`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compendium.book.quantities import Quantity
from compendium.learning import History, evaluate, fit
from compendium.plasticity.hybrid import HybridMLP, PlasticLIF, two_timescale_adam
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


def train_mlp(mode: str, train: Data, test: Data | None, setup: Setup, *, seed: int = 0,
              in_features: int = 784, encoding: str = "direct") -> tuple[HybridMLP, History]:
    torch.manual_seed(seed)
    model = HybridMLP((in_features, setup.hidden, 10), mode, T=setup.T, encoding=encoding, **setup.plastic_kw())
    hist = fit(model, train, test=test, epochs=setup.epochs, lr=setup.lr, batch_size=setup.batch_size,
               optimizer=two_timescale_adam(model, setup.meta_lr), device=setup.device, seed=seed,
               desc=f"{mode.upper()} seed {seed}", show_progress=False)
    return model, hist


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
    ``lr · meta_lr / setup.lr``, LP readout)."""
    out = copy.deepcopy(model)
    opt = two_timescale_adam(out, setup.meta_lr * lr / setup.lr)(None, lr)
    x, y = few[0].to(setup.device), few[1].to(setup.device)
    torch.manual_seed(seed)
    out.train()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(out(x), y).backward()
        opt.step()
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
    rng = np.random.default_rng(seed)
    by_class = {int(c): np.flatnonzero(labels.numpy() == c) for c in classes}
    sx, sy, qx, qy = [], [], [], []
    for _ in range(n_episodes):
        chosen = rng.choice(classes, size=n_way, replace=False)
        items, tags = [], []
        for j, c in enumerate(chosen):
            items += list(rng.choice(by_class[int(c)], size=k_shot, replace=False))
            tags += [j] * k_shot
        order = rng.permutation(len(items))
        target = int(rng.integers(n_way))
        q_class = chosen[target]
        q_pick = rng.choice([i for i in by_class[int(q_class)] if i not in items], size=1)[0]
        sx.append(images[np.array(items)[order]])
        sy.append(torch.tensor(np.array(tags)[order]))
        qx.append(images[q_pick])
        qy.append(target)
    return torch.stack(sx), torch.stack(sy), torch.stack(qx), torch.tensor(qy)


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
    """Train on episodes of the training classes; returns the per-batch query accuracy."""
    torch.manual_seed(seed)
    sx, sy, qx, qy = episodes(images, labels, classes, model.n_way, k_shot, n_episodes, seed=seed)
    model.to(device)
    model(sx[:1].to(device), sy[:1].to(device), qx[:1].to(device))  # materialise the lazy layer
    opt = two_timescale_adam(model, meta_lr)(None, lr)
    accs = []
    for i in progress(range(0, n_episodes, batch), desc=f"meta-train {model.output.mode.upper()}", enabled=show_progress):
        b = slice(i, i + batch)
        out = model(sx[b].to(device), sy[b].to(device), qx[b].to(device))
        loss = F.cross_entropy(out, qy[b].to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        accs.append(float((out.argmax(1) == qy[b].to(device)).float().mean()))
    return accs


@torch.no_grad()
def episode_accuracy(model: FewShotNet, episodes_: tuple[Tensor, Tensor, Tensor, Tensor], device: str = "cpu",
                     batch: int = 100) -> float:
    sx, sy, qx, qy = episodes_
    model.eval()
    hits = 0
    for i in range(0, len(qy), batch):
        out = model(sx[i:i + batch].to(device), sy[i:i + batch].to(device), qx[i:i + batch].to(device))
        hits += int((out.argmax(1).cpu() == qy[i:i + batch]).sum())
    return hits / len(qy)


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


def finetune_accuracy(features: Features, episodes_: tuple[Tensor, Tensor, Tensor, Tensor], n_way: int, *,
                      steps: int = 30, lr: float = 0.1, device: str = "cpu") -> float:
    """GP at test time: a fresh linear readout fitted to each episode's support set by gradient
    steps on the frozen features, then the query classified."""
    sx, sy, qx, qy = episodes_
    hits = 0
    with torch.no_grad():
        f_sup = features(sx.flatten(0, 1).to(device)).reshape(sx.shape[0], sx.shape[1], -1)
        f_q = features(qx.to(device))
    for e in range(len(qy)):
        head = nn.Linear(f_sup.shape[-1], n_way).to(device)
        opt = torch.optim.SGD(head.parameters(), lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(head(f_sup[e]), sy[e].to(device)).backward()
            opt.step()
        hits += int(head(f_q[e:e + 1]).argmax(1).item() == int(qy[e]))
    return hits / len(qy)


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
