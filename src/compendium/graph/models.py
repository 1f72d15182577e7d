"""Node classifiers: spiking GC-SNN / GA-SNN (with or without STFN) and their ANN baselines
(GCN, GAT), all through the same data path; :class:`NodeClassifier` lets the package's one
training loop (:func:`compendium.learning.fit`) train them on node indices.

Preprocessing and initialisation, per model:

- the ANN baselines take row-normalised features (:func:`row_normalize`, PyG's
  ``NormalizeFeatures``), as Kipf & Welling and Veličković et al. did, and Glorot-initialised
  weights (their code's and PyG's);
- the spiking networks take the binary bag-of-words features themselves as spikes (direct
  coding, identical at every step): row-normalised values are not spikes;
- a spiking layer without STFN is rescaled at initialisation so that its neurons' input has
  standard deviation ``V_th`` on the graph (:func:`threshold_scaled_graph_init`): from
  PyTorch's default initialisation its membrane stays below threshold on Cora and CiteSeer, no
  neuron fires, the surrogate gradient is zero and it never learns.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.nn import GATConv

from compendium.graph.layers import (SparseOperator, SpikingGATConv, SpikingGCNConv, dropout, normalized_adjacency,
                                     propagate, store_transposed, tensor_state)
from compendium.spiking.init import frozen_buffers
from compendium.spiking.neuron import LIF

ENCODINGS = ("direct", "bernoulli", "threshold")


def row_normalize(x: Tensor) -> Tensor:
    """Each node's (non-negative) features divided by their sum, a sum below 1 by 1 (so an
    all-zero row stays zero): PyG's ``NormalizeFeatures``, Kipf & Welling's preprocessing."""
    return x / x.sum(dim=-1, keepdim=True).clamp(min=1.0)


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

    def forward(self, x: Tensor | SparseOperator, graph: Tensor | SparseOperator) -> Tensor:
        """``graph``: the normalised adjacency (GC) or the edge index (GA).

        GC: the second layer is linear and non-spiking, so the mean over steps of its output is
        that layer applied once to the mean over steps of the (dropped-out) spikes,
        ``mean_t(Â (o_t W) + b) = Â (mean_t(o_t) W) + b``: one aggregation instead of ``T``; and
        that mean is the first layer's :meth:`~compendium.graph.layers.SpikingGCNConv.rate`."""
        if self.kind == "gcn":
            return self.layer2.static(self.layer1.rate(x, graph, self.dropout, self.training), graph)
        spikes = dropout(self.layer1(x, graph), self.dropout, self.training)
        return self.layer2(spikes, graph).mean(0)


@torch.no_grad()
def threshold_scaled_graph_init(clf: "NodeClassifier", gain: float = 1.0, iterations: int = 2) -> list[float]:
    """Rescale each spiking layer *without STFN* of ``clf.model`` (forward order) so that the
    standard deviation of its neurons' input over all nodes, channels and steps is
    ``gain · V_th``; returns those standard deviations after rescaling.

    This is LSUV (Mishkin & Matas, ICLR 2016) with the threshold as target, as
    :func:`compendium.spiking.init.threshold_scaled_init`, but measured at the neuron's input —
    after the graph aggregation ``Â (X W) + b`` — which that function's hooks on linear layers
    do not see (the features enter as a sparse product). It is data-dependent: the whole graph
    is the batch, in training mode. A layer with STFN is left alone: STFN normalises its input
    to ``ρ V_th`` whatever the weights' scale."""
    net = clf.model
    layers = [m for m in net.modules() if isinstance(m, (SpikingGCNConv, SpikingGATConv))
              and isinstance(m.neuron, LIF) and isinstance(m.norm, nn.Identity)]
    stds: list[float] = []
    with frozen_buffers(clf):
        for layer in layers:
            target = gain * float(layer.neuron.threshold)
            weights = [p for n, p in layer.named_parameters() if n.endswith("weight") and p.dim() == 2]
            seen: list[Tensor] = []
            hook = layer.neuron.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0]))
            try:
                for _ in range(iterations):
                    seen.clear()
                    clf.full()
                    s = float(seen[0].std())
                    if s > 0:
                        for w in weights:
                            w.mul_(target / s)
                seen.clear()
                clf.full()
                stds.append(float(seen[0].std()))
            finally:
                hook.remove()
    return stds


class GCN(nn.Module):
    """Kipf & Welling's two-layer GCN, ``Â ReLU(Â X W₁ + b₁) W₂ + b₂``, on the same propagation as
    the spiking layers: Glorot-initialised weights, dropout on the input features' stored values
    (their sparse dropout) and on the hidden layer."""

    def __init__(self, in_features: int, hidden: int, classes: int, dropout: float = 0.5):
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(in_features, hidden, bias=False), nn.Linear(hidden, classes, bias=False)
        self.bias1, self.bias2 = nn.Parameter(torch.zeros(hidden)), nn.Parameter(torch.zeros(classes))
        for lin in (self.lin1, self.lin2):
            nn.init.xavier_uniform_(lin.weight)
        self.dropout = dropout

    def forward(self, x: Tensor | SparseOperator, adj: Tensor | SparseOperator) -> Tensor:
        if isinstance(x, SparseOperator):
            xw = x(self.lin1.weight.t(), value_dropout=self.dropout, training=self.training)
        elif x.is_sparse:
            raise TypeError("GCN: pass sparse features as a SparseOperator (value dropout needs their transpose)")
        else:
            xw = self.lin1(dropout(x, self.dropout, self.training))
        h = torch.relu(propagate(adj, xw) + self.bias1)
        h = dropout(h, self.dropout, self.training)
        return propagate(adj, self.lin2(h)) + self.bias2


class GAT(nn.Module):
    """Veličković et al.'s two-layer GAT (8 heads × 8 hidden, ELU), PyG's GATConv."""

    def __init__(self, in_features: int, hidden: int, classes: int, heads: int = 8, dropout: float = 0.6):
        super().__init__()
        self.conv1 = GATConv(in_features, hidden, heads=heads, dropout=dropout)
        self.conv2 = GATConv(hidden * heads, classes, heads=1, concat=False, dropout=dropout)
        self.dropout = dropout

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = dropout(x, self.dropout, self.training)
        h = nn.functional.elu(self.conv1(x, edge_index))
        h = dropout(h, self.dropout, self.training)
        return self.conv2(h, edge_index)


def input_linear(model: nn.Module) -> nn.Linear | None:
    """The linear layer that multiplies ``model``'s input features (``X W``; GC models only), for
    :func:`~compendium.graph.layers.store_transposed` when those features are sparse."""
    if isinstance(model, GCN):
        return model.lin1
    if isinstance(model, SpikingGNN) and model.kind == "gcn":
        return model.layer1.linear
    return None


class NodeClassifier(nn.Module):
    """Wraps a full-graph model so that it maps node indices to logits: transductive node
    classification then trains through the ordinary loop, with the labelled nodes as the data.

    For GC models the normalised adjacency, and bag-of-words features (~1 % non-zero), are held
    as :class:`SparseOperator`; with sparse features the first layer's weight is then stored
    column-major (:func:`~compendium.graph.layers.store_transposed`, :func:`input_linear`), so
    build the optimiser after this wrapper. In evaluation mode without gradient the full-graph logits are
    computed once per state of the parameters and reused for every index set (validation and
    test in the same epoch cost one forward pass, not two)."""

    def __init__(self, model: nn.Module, x: Tensor, edge_index: Tensor, num_nodes: int):
        super().__init__()
        self.model = model
        self.register_buffer("edge_index", edge_index)
        self.graph_arg = "edge_index" if isinstance(model, GAT) or getattr(model, "kind", "") == "gat" else "adj"
        self.x: Tensor | SparseOperator
        if self.graph_arg == "adj":
            self.adj = SparseOperator(normalized_adjacency(edge_index, num_nodes))
            if x.dim() == 2 and float((x != 0).float().mean()) < 0.1:
                self.x = SparseOperator(x)
                first = input_linear(model)
                if first is not None:  # the sparse product X Wᵀ reads Wᵀ: keep it contiguous
                    store_transposed(first)
            else:
                self.register_buffer("x", x)
        else:
            self.register_buffer("x", x)
        self._cache: tuple[tuple, Tensor] | None = None

    def full(self) -> Tensor:
        return self.model(self.x, getattr(self, self.graph_arg))

    def _state_key(self) -> tuple:
        return tensor_state([*self.parameters(), *self.buffers()])

    def forward(self, idx: Tensor) -> Tensor:
        if self.training or torch.is_grad_enabled():
            self._cache = None
            return self.full()[idx]
        key = self._state_key()
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self.full())
        return self._cache[1][idx]
