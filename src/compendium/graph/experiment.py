"""One node-classification run (Planetoid split, full batch, model selection on validation),
shared by the graph chapter's default and paper profiles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from compendium.graph.cost import gcn_ops, gcn_ops_parts
from compendium.graph.models import GAT, GCN, NodeClassifier, SpikingGNN, encode_features
from compendium.learning import History, fit

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
