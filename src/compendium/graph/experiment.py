"""One node-classification run (Planetoid split, full batch, model selection on validation),
shared by the graph chapter's default and paper profiles, and the quantities its claims read
(per-seed accuracies and energy ratios, the convergence rate over runs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import torch

from compendium.book.quantities import Quantity
from compendium.graph.cost import gcn_ops, gcn_ops_parts
from compendium.graph.models import GAT, GCN, NodeClassifier, SpikingGNN, encode_features
from compendium.learning import History, fit

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

    def row(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "model": self.model, "seed": self.seed, "test_acc": self.test_acc,
                "best_epoch": self.best_epoch, "firing_rate": self.firing_rate}


def run_node_classification(data, dataset: str, model: str, seed: int, *, epochs: int, T: int, hidden: int,
                            lr: float, weight_decay: float, dropout: float, decay: float, threshold: float,
                            encoding: str = "direct", heads: int = 8, rho: float = 1.0, device: str = "cpu",
                            show_progress: bool = False) -> NodeRun:
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    torch.manual_seed(seed)
    N, F = data.x.shape
    C = int(data.y.max()) + 1
    spiking = "snn" in model
    x = encode_features(data.x, T, encoding, torch.Generator().manual_seed(seed)) if spiking else data.x
    if model == "gcn":
        net = GCN(F, hidden, C, dropout)
    elif model == "gat":
        net = GAT(F, hidden, C, heads, dropout)
    else:
        net = SpikingGNN("gcn" if model.startswith("gc") else "gat", F, hidden, C, N, T, stfn=model.endswith("stfn"),
                         lif={"decay": decay, "threshold": threshold}, dropout=dropout, heads=heads, rho=rho)
    clf = NodeClassifier(net, x, data.edge_index, N)
    idx = {k: torch.nonzero(getattr(data, f"{k}_mask")).squeeze(1) for k in ("train", "val", "test")}
    # weight decay is for the weights: the per-node STFN affine of unlabelled nodes gets almost no
    # loss gradient, and decaying it silences those nodes late in training (see the chapter)
    hist = fit(clf, (idx["train"], data.y[idx["train"]]), val=(idx["val"], data.y[idx["val"]]),
               test=(idx["test"], data.y[idx["test"]]), epochs=epochs, lr=lr, weight_decay=weight_decay,
               batch_size=len(idx["train"]), eval_batch_size=N, device=device, seed=seed,
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
            nnz_adj = int(clf.adj._nnz())
            nnz_x = int((data.x != 0).sum())
            args = (N, nnz_adj, nnz_x, hidden, C, T, float(spikes.sum()), x.dim() == 2, bool(((x == 0) | (x == 1)).all()),
                    model.endswith("stfn"))
            ops = gcn_ops(N, nnz_adj, F, *args[2:])["GC-SNN"]
            parts = gcn_ops_parts(*args)["GC-SNN"]
    elif model == "gcn":
        clf.eval()
        nnz_adj, nnz_x = int(clf.adj._nnz()), int((data.x != 0).sum())
        ops = gcn_ops(N, nnz_adj, F, nnz_x, hidden, C)["ANN GCN"]
        parts = gcn_ops_parts(N, nnz_adj, nnz_x, hidden, C)["ANN GCN"]
    return NodeRun(dataset, model, seed, test_acc, best_epoch, hist, ops, rate, parts)


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
