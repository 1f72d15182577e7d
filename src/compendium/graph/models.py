"""Node classifiers: spiking GC-SNN / GA-SNN (with or without STFN) and their ANN baselines
(GCN, GAT), all through the same data path; :class:`NodeClassifier` lets the package's one
training loop (:func:`compendium.learning.fit`) train them on node indices."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.nn import GATConv

from compendium.graph.layers import SpikingGATConv, SpikingGCNConv, normalized_adjacency, propagate

ENCODINGS = ("direct", "bernoulli", "threshold")


def encode_features(x: Tensor, T: int, encoding: str, generator: torch.Generator | None = None,
                    level: float = 0.0) -> Tensor:
    """Node features as spikes: ``direct`` (the features themselves, every step: spikes when
    binary, as Cora's and CiteSeer's are), ``bernoulli`` (``[T, N, F]`` with
    ``p = x / max(x)``), ``threshold`` (``x > level``, every step)."""
    if encoding == "direct":
        return x
    if encoding == "threshold":
        return (x > level).to(x.dtype)
    if encoding == "bernoulli":
        p = (x / x.max().clamp_min(1e-12)).clamp(0, 1)
        return torch.bernoulli(p.unsqueeze(0).expand(T, *p.shape), generator=generator)
    raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")


class SpikingGNN(nn.Module):
    """Two graph layers: spiking layer (GC or GA) → dropout → non-spiking graph layer whose
    output, averaged over the ``T`` steps, gives the logits (a rate readout)."""

    def __init__(self, kind: str, in_features: int, hidden: int, classes: int, num_nodes: int, T: int, *,
                 stfn: bool, lif: dict[str, Any], dropout: float, heads: int = 8, rho: float = 1.0):
        super().__init__()
        if kind not in ("gcn", "gat"):
            raise ValueError(f"kind must be 'gcn' or 'gat', got {kind!r}")
        self.kind, self.T, self.dropout = kind, T, dropout
        lif = {"step_mode": "multi", **lif}
        if kind == "gcn":
            self.layer1 = SpikingGCNConv(in_features, hidden, T, num_nodes, stfn=stfn, lif=lif, rho=rho)
            self.layer2 = SpikingGCNConv(hidden, classes, T, num_nodes, stfn=False, lif=lif, spiking=False)
        else:
            self.layer1 = SpikingGATConv(in_features, hidden, T, num_nodes, stfn=stfn, lif=lif, heads=heads,
                                         dropout=dropout, rho=rho)
            self.layer2 = SpikingGATConv(hidden * heads, classes, T, num_nodes, stfn=False, lif=lif, heads=1,
                                         concat=False, dropout=dropout, spiking=False)

    def forward(self, x: Tensor, graph: Tensor) -> Tensor:
        """``graph``: the normalised adjacency (GC) or the edge index (GA)."""
        spikes = self.layer1(x, graph)
        spikes = nn.functional.dropout(spikes, self.dropout, self.training)
        return self.layer2(spikes, graph).mean(0)


def sparse_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Dropout on the stored values of a sparse tensor (zeros stay zero, as in Kipf & Welling)."""
    if not training or p == 0:
        return x
    x = x.coalesce()
    return torch.sparse_coo_tensor(x.indices(), nn.functional.dropout(x.values(), p, True), x.shape,
                                   check_invariants=False)


def linear_any(lin: nn.Linear, x: Tensor) -> Tensor:
    """``lin(x)`` for a dense or sparse ``x``."""
    if not x.is_sparse:
        return lin(x)
    out = torch.sparse.mm(x, lin.weight.t())
    return out + lin.bias if lin.bias is not None else out


class GCN(nn.Module):
    """Kipf & Welling's two-layer GCN, on the same propagation as the spiking layers."""

    def __init__(self, in_features: int, hidden: int, classes: int, dropout: float = 0.5):
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(in_features, hidden), nn.Linear(hidden, classes)
        self.dropout = dropout

    def forward(self, x: Tensor, adj: Tensor) -> Tensor:
        x = sparse_dropout(x, self.dropout, self.training) if x.is_sparse else nn.functional.dropout(x, self.dropout, self.training)
        h = torch.relu(propagate(adj, linear_any(self.lin1, x)))
        h = nn.functional.dropout(h, self.dropout, self.training)
        return propagate(adj, self.lin2(h))


class GAT(nn.Module):
    """Veličković et al.'s two-layer GAT (8 heads × 8 hidden, ELU), PyG's GATConv."""

    def __init__(self, in_features: int, hidden: int, classes: int, heads: int = 8, dropout: float = 0.6):
        super().__init__()
        self.conv1 = GATConv(in_features, hidden, heads=heads, dropout=dropout)
        self.conv2 = GATConv(hidden * heads, classes, heads=1, concat=False, dropout=dropout)
        self.dropout = dropout

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = nn.functional.dropout(x, self.dropout, self.training)
        h = nn.functional.elu(self.conv1(x, edge_index))
        h = nn.functional.dropout(h, self.dropout, self.training)
        return self.conv2(h, edge_index)


class NodeClassifier(nn.Module):
    """Wraps a full-graph model so that it maps node indices to logits: transductive node
    classification then trains through the ordinary loop, with the labelled nodes as the data."""

    def __init__(self, model: nn.Module, x: Tensor, edge_index: Tensor, num_nodes: int):
        super().__init__()
        self.model = model
        self.register_buffer("edge_index", edge_index)
        self.graph_arg = "edge_index" if isinstance(model, GAT) or getattr(model, "kind", "") == "gat" else "adj"
        if self.graph_arg == "adj":
            self.register_buffer("adj", normalized_adjacency(edge_index, num_nodes))
            # bag-of-words features are ~1 % non-zero: the first layer's product is far cheaper sparse
            if x.dim() == 2 and float((x != 0).float().mean()) < 0.1:
                x = x.to_sparse()
        self.register_buffer("x", x)

    def full(self) -> Tensor:
        return self.model(self.x, getattr(self, self.graph_arg))

    def forward(self, idx: Tensor) -> Tensor:
        return self.full()[idx]
