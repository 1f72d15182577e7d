"""One node-classification run (Planetoid split, full batch, model selection on validation),
shared by the graph chapter's default and paper profiles, and the quantities its claims read
(per-seed accuracies and energy ratios, the convergence rate over runs).

What each model gets (see :mod:`compendium.graph.models`): GCN and GAT the row-normalised
features and Glorot initialisation of their authors; the spiking networks the binary features
as spikes, and — without STFN — the threshold-scaled initialisation under which they fire.
Every model is trained by the same loop with the optimiser settings it is given (the chapter
gives GCN and GC-SNN the same Adam learning rate, weight decay and epochs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import torch
from torch.utils.data import Dataset

from compendium.book.quantities import Quantity
from compendium.graph.cost import gcn_ops, gcn_ops_parts
from compendium.graph.models import (GAT, GCN, NodeClassifier, SpikingGNN, encode_features, row_normalize,
                                     threshold_scaled_graph_init)
from compendium.learning import History, fit
from compendium.spiking.init import firing_rates

if TYPE_CHECKING:
    import pandas as pd

MODELS = ("gcn", "gat", "gc-snn", "gc-snn+stfn", "ga-snn", "ga-snn+stfn")


@dataclass
class NodeRun:
    dataset: str
    model: str
    seed: int
    test_acc: float  # at the epoch of best validation accuracy
    best_epoch: int
    history: History
    ops: dict[str, float] | None  # {"MAC": ..., "AC": ...} per full-graph inference (GC models)
    firing_rate: float | None
    ops_parts: dict[str, tuple[str, float]] | None = None  # the components behind ``ops``
    init_firing_rate: float | None = None  # hidden layer's mean rate at initialisation (spiking models)
    init_scaled: bool = False  # whether the threshold-scaled initialisation was applied

    def row(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "model": self.model, "seed": self.seed, "test_acc": self.test_acc,
                "best_epoch": self.best_epoch, "init_firing_rate": self.init_firing_rate,
                "firing_rate": self.firing_rate}


class FullBatch(Dataset):
    """A whole node set as one pre-made batch ``(node indices, labels)``: with ``batch_size=None``
    PyTorch's DataLoader hands it to the loop as it is (automatic batching off), instead of
    indexing and re-stacking every node one by one each epoch — which cost more than the
    full-graph forward pass of a GCN on Cora."""

    def __init__(self, idx: torch.Tensor, y: torch.Tensor):
        self.idx, self.y = idx, y

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if i != 0:
            raise IndexError(i)
        return self.idx, self.y


def build_classifier(data, model: str, seed: int, *, T: int, hidden: int, dropout: float, decay: float,
                     threshold: float, encoding: str = "direct", heads: int = 8, rho: float = 1.0,
                     init_gain: float = 1.0) -> tuple[NodeClassifier, torch.Tensor, bool]:
    """The untrained :class:`NodeClassifier` for ``model`` under ``seed``, with its inputs and
    initialisation: ANN baselines on row-normalised features; spiking models on the features
    as spikes (``encoding``), and — without STFN — rescaled by :func:`threshold_scaled_graph_init`
    (``init_gain · V_th``; ``init_gain ≤ 0`` keeps PyTorch's default initialisation). Returns ``(classifier, its input features, whether it was rescaled)``."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    torch.manual_seed(seed)
    N, F = data.x.shape
    C = int(data.y.max()) + 1
    spiking = "snn" in model
    x = encode_features(data.x, T, encoding, torch.Generator().manual_seed(seed)) if spiking else row_normalize(data.x)
    if model == "gcn":
        net = GCN(F, hidden, C, dropout)
    elif model == "gat":
        net = GAT(F, hidden, C, heads, dropout)
    else:
        net = SpikingGNN("gcn" if model.startswith("gc") else "gat", F, hidden, C, N, T, stfn=model.endswith("stfn"),
                         lif={"decay": decay, "threshold": threshold}, dropout=dropout, heads=heads, rho=rho)
    clf = NodeClassifier(net, x, data.edge_index, N)
    scaled = spiking and not model.endswith("stfn") and init_gain > 0
    if scaled:
        threshold_scaled_graph_init(clf, gain=init_gain)
    return clf, x, scaled


def run_node_classification(data, dataset: str, model: str, seed: int, *, epochs: int, T: int, hidden: int,
                            lr: float, weight_decay: float, dropout: float, decay: float, threshold: float,
                            encoding: str = "direct", heads: int = 8, rho: float = 1.0, init_gain: float = 1.0,
                            device: str = "cpu", show_progress: bool = False) -> NodeRun:
    """Train ``model`` on the Planetoid split of ``data`` (Adam, ``lr``, ``weight_decay`` on every
    weight but STFN's, ``epochs``, full batch); the test accuracy is read at the epoch of best
    validation accuracy."""
    clf, x, scaled = build_classifier(data, model, seed, T=T, hidden=hidden, dropout=dropout, decay=decay,
                                   threshold=threshold, encoding=encoding, heads=heads, rho=rho, init_gain=init_gain)
    net = clf.model
    N, F = data.x.shape
    C = int(data.y.max()) + 1
    spiking = "snn" in model
    all_nodes = torch.arange(N)
    init_rate = firing_rates(clf, all_nodes)[0] if spiking else None
    idx = {k: torch.nonzero(getattr(data, f"{k}_mask")).squeeze(1) for k in ("train", "val", "test")}
    # weight decay is for the weights: the per-node STFN affine of unlabelled nodes gets almost no
    # loss gradient, and decaying it silences those nodes late in training (see the chapter)
    split = {k: FullBatch(i, data.y[i]) for k, i in idx.items()}
    # full batch: each split is one pre-made batch (see FullBatch), hence batch_size=None
    hist = fit(clf, split["train"], val=split["val"], test=split["test"], epochs=epochs, lr=lr,
               weight_decay=weight_decay, batch_size=None, eval_batch_size=None, device=device, seed=seed,
               decay_filter=lambda name, p: ".norm." not in name, show_progress=show_progress,
               desc=f"{dataset} {model} seed {seed}")
    best_epoch, test_acc = hist.at_best("val_acc", "test_acc")
    ops, rate, parts = None, None, None
    if spiking:
        clf.eval()
        with torch.no_grad():
            spikes = net.layer1(clf.x, getattr(clf, clf.graph_arg))
        rate = float(spikes.mean())
        if net.kind == "gcn":
            nnz_adj = clf.adj.nnz
            nnz_x = int((data.x != 0).sum())
            args = (N, nnz_adj, nnz_x, hidden, C, T, float(spikes.sum()), x.dim() == 2,
                    bool(((x == 0) | (x == 1)).all()), model.endswith("stfn"))
            ops = gcn_ops(N, nnz_adj, F, *args[2:])["GC-SNN"]
            parts = gcn_ops_parts(*args)["GC-SNN"]
    elif model == "gcn":
        clf.eval()
        nnz_adj, nnz_x = clf.adj.nnz, int((data.x != 0).sum())
        ops = gcn_ops(N, nnz_adj, F, nnz_x, hidden, C)["ANN GCN"]
        parts = gcn_ops_parts(N, nnz_adj, nnz_x, hidden, C)["ANN GCN"]
    return NodeRun(dataset, model, seed, test_acc, best_epoch, hist, ops, rate, parts, init_rate, scaled)


def paired_difference(runs: Iterable[NodeRun], dataset: str, better: str, worse: str) -> Quantity | None:
    """``acc(better) − acc(worse)`` on ``dataset``, seed by seed over the seeds both ran, as a
    t-interval over seeds (what the paired ordering rules judge); ``None`` without a common seed.
    Its half-width is the resolution of the run: the smallest distance from a rule's margin at
    which the comparison is decided."""
    acc = {m: {r.seed: float(r.test_acc) for r in runs if r.dataset == dataset and r.model == m} for m in (better, worse)}
    seeds = sorted(set(acc[better]) & set(acc[worse]))
    if not seeds:
        return None
    return Quantity.from_samples(f"{slug(better)}_minus_{slug(worse)}_{dataset}",
                                 [acc[better][s] - acc[worse][s] for s in seeds])


def slug(model: str) -> str:
    """``gc-snn+stfn`` → ``gc_snn_stfn``: the model's part of a quantity or number name."""
    return model.replace("+", "_").replace("-", "_")


def accuracy_quantities(runs: Iterable[NodeRun]) -> list[Quantity]:
    """``acc_<dataset>_<model>``: test accuracy (at the best-validation epoch) of every
    (dataset, model) in ``runs``, as per-seed samples in seed order (t-interval over seeds), so
    that two models run on the same seeds can be compared pairwise, seed by seed."""
    by: dict[tuple[str, str], dict[int, float]] = {}
    for r in runs:
        by.setdefault((r.dataset, r.model), {})[r.seed] = float(r.test_acc)
    return [Quantity.from_samples(f"acc_{d}_{slug(m)}", [acc[s] for s in sorted(acc)]) for (d, m), acc in by.items()]


def energy_ratio_quantities(runs: Iterable[NodeRun], energy_pj: Callable[[float, float], float], snn: str = "gc-snn+stfn",
                            ann: str = "gcn") -> list[Quantity]:
    """``energy_ratio_<dataset>``: estimated energy per full-graph inference of ``snn`` over
    ``ann``, seed by seed (the spiking network's accumulates depend on the spikes of each seed),
    as per-seed samples (t-interval). ``energy_pj(macs, acs)`` is the energy model, e.g.
    :meth:`compendium.hardware.EnergyModel.energy_pj`. Datasets lacking either model are skipped."""
    runs = list(runs)
    out = []
    for d in dict.fromkeys(r.dataset for r in runs):
        e = {m: {r.seed: energy_pj(r.ops["MAC"], r.ops["AC"]) for r in runs if r.dataset == d and r.model == m and r.ops}
             for m in (snn, ann)}
        seeds = sorted(set(e[snn]) & set(e[ann]))
        if seeds:
            out.append(Quantity.from_samples(f"energy_ratio_{d}", [e[snn][s] / e[ann][s] for s in seeds]))
    return out


def convergence_table(runs: Iterable[NodeRun], fraction: float = 0.9, with_model: str = "gc-snn+stfn",
                      without_model: str = "gc-snn") -> "pd.DataFrame":
    """Per (dataset, seed) run pair: the first epoch at which each model's validation accuracy
    reaches ``fraction`` of the best validation accuracy of ``with_model`` (STFN).

    A model that never reaches it within its epoch budget is *censored*: its epoch reads
    ``<NA>`` (a nullable integer, never NaN in a float column) and ``censored without`` is true;
    it counts as reached later than any epoch within the budget. ``STFN first`` is true when the
    STFN model reached the level at an earlier epoch than the model without (a tie is not
    first)."""
    import pandas as pd

    runs = list(runs)
    rows = []
    for d in dict.fromkeys(r.dataset for r in runs):
        seeds = sorted({r.seed for r in runs if r.dataset == d})
        for seed in seeds:
            by = {r.model: r for r in runs if r.dataset == d and r.seed == seed}
            if with_model not in by or without_model not in by:
                continue
            level = fraction * max(by[with_model].history["val_acc"])
            s = by[with_model].history.first_epoch("val_acc", level)
            w = by[without_model].history.first_epoch("val_acc", level)
            rows.append({"dataset": d, "seed": seed, "level": level, "epochs with STFN": s, "epochs without": w,
                         "censored without": w is None,
                         "STFN first": s is not None and (w is None or s < w)})
    table = pd.DataFrame(rows, columns=["dataset", "seed", "level", "epochs with STFN", "epochs without",
                                        "censored without", "STFN first"])
    for c in ("epochs with STFN", "epochs without"):
        table[c] = table[c].astype("Int64")
    return table


def convergence_quantity(table: "pd.DataFrame", name: str = "stfn_first_rate") -> Quantity | None:
    """The share of run pairs (datasets × seeds) in which STFN reached the level first, as a
    rate over run pairs (Wilson); ``None`` when ``table`` has no run pair."""
    if len(table) == 0:
        return None
    return Quantity.rate(name, int(table["STFN first"].sum()), len(table))


def decisive_count(pairs: int, above: float = 0.5) -> int | None:
    """The smallest number of run pairs out of ``pairs`` that must favour STFN for the Wilson
    interval of :func:`convergence_quantity` to lie wholly above ``above`` (by symmetry, as many
    the other way put it wholly below ``1 - above``); ``None`` when no count suffices. This is
    the resolution of the convergence rate at this number of runs, not a verdict."""
    for k in range(pairs + 1):
        if Quantity.rate("r", k, pairs).low > above:
            return k
    return None


def claim_unavailable(names: Sequence[str], ran: Sequence[str], missing: Mapping[str, str],
                      models: Sequence[str]) -> dict[str, str]:
    """Why each quantity in ``names`` (those the claims read but this run did not produce) is
    absent: ``{quantity: reason}`` for accuracies (``acc_<dataset>_<model>``), energy ratios and
    the convergence rate; ``ran`` are the datasets that ran, ``missing`` the data that did not
    resolve (``{dataset: reason}``), ``models`` the models of this run."""
    def dataset_reason(d: str) -> str | None:
        if d in missing:
            return f"{d}: {missing[d]}"
        if d not in ran:
            return f"{d} is not in this run's datasets ({', '.join(ran) or 'none'})"
        return None

    out: dict[str, str] = {}
    for n in names:
        if n.startswith("acc_"):
            d = n.split("_")[1]
            m = next((m for m in MODELS if n == f"acc_{d}_{slug(m)}"), None)
            out[n] = dataset_reason(d) or (f"{m} is not in this run's models ({', '.join(models)})" if m
                                           else "not measured by this run")
        elif n.startswith("energy_ratio_"):
            d = n[len("energy_ratio_"):]
            out[n] = dataset_reason(d) or f"needs gcn and gc-snn+stfn in models (ran {', '.join(models)})"
        elif n == "stfn_first_rate":
            out[n] = f"needs gc-snn and gc-snn+stfn in models and a dataset that ran (ran {', '.join(models)})"
    return out
