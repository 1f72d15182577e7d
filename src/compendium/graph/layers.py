"""Spiking graph layers (Xu et al., IJCAI 2021, arXiv:2107.06865) on PyTorch Geometric.

Node features are presented at every time step; each layer computes a pre-synaptic input
``S_t`` per node, optionally normalised by STFN, which drives a multi-step LIF neuron:

- GC-SNN: ``S_t = Â (X_t W) + b`` with the GCN propagation ``Â = D^-1/2 (A + I) D^-1/2``
  (PyG's ``gcn_norm``); since the aggregation is linear, ``X_t W`` is formed first, which is
  addition-only when ``X_t`` is spikes. When the input is identical at every step (static
  features), ``X W`` and its aggregation are computed once, not ``T`` times.
- GA-SNN: ``S_t`` is PyG's ``GATConv`` applied to the spike features of step ``t``
  (attention coefficients are recomputed at every step, from spikes).
- STFN, per node ``v``, statistics over the feature dimension ``C`` and all ``T`` steps::

      Ŝ_t^{k,v} = ρ V_th (S_t^{k,v} - E[S^v]) / sqrt(Var[S^v] + ε),   Y_t^{k,v} = λ^v Ŝ_t^{k,v} + γ^v

  with ``ρ`` learnable. The statistics come from the input itself (like layer norm over
  ``(T, C)``), so training and evaluation use the same computation and no running
  statistics are kept. The affine ``λ^v, γ^v`` is per node as the chapter's issue specifies
  (the paper's ``λ^{k,v}`` may also index features; not transcribed).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.nn import GATConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from compendium.spiking.neuron import LIF


def normalized_adjacency(edge_index: Tensor, num_nodes: int) -> Tensor:
    """``D^-1/2 (A + I) D^-1/2`` as a sparse ``[N, N]`` tensor (PyG's GCN normalisation)."""
    ei, w = gcn_norm(edge_index, None, num_nodes, add_self_loops=True)
    return torch.sparse_coo_tensor(ei.flip(0), w, (num_nodes, num_nodes), check_invariants=True).coalesce()


def propagate(adj: Tensor, h: Tensor) -> Tensor:
    """``Â h`` for ``h`` of shape ``[N, F]`` or ``[T, N, F]`` (one sparse product for all steps)."""
    if h.dim() == 2:
        return torch.sparse.mm(adj, h)
    T, N, F = h.shape
    out = torch.sparse.mm(adj, h.permute(1, 0, 2).reshape(N, T * F))
    return out.reshape(N, T, F).permute(1, 0, 2)


class STFN(nn.Module):
    """Spatial-temporal feature normalisation over ``[T, N, C]`` (see the module docstring)."""

    def __init__(self, num_nodes: int, threshold: float, rho: float = 1.0, eps: float = 1e-5):
        super().__init__()
        self.threshold, self.eps = threshold, eps
        self.rho = nn.Parameter(torch.tensor(float(rho)))
        self.weight = nn.Parameter(torch.ones(num_nodes, 1))
        self.bias = nn.Parameter(torch.zeros(num_nodes, 1))

    def forward(self, s: Tensor) -> Tensor:
        if s.dim() != 3 or s.shape[1] != self.weight.shape[0]:
            raise ValueError(f"STFN expects [T, N={self.weight.shape[0]}, C], got {tuple(s.shape)}")
        mean = s.mean(dim=(0, 2), keepdim=True)
        var = s.var(dim=(0, 2), unbiased=False, keepdim=True)
        return self.weight * (self.rho * self.threshold * (s - mean) / torch.sqrt(var + self.eps)) + self.bias


class SpikingGCNConv(nn.Module):
    """Graph convolution → (STFN) → LIF, multi-step. Input ``[N, F]`` (static) or ``[T, N, F]``."""

    def __init__(self, in_features: int, out_features: int, T: int, num_nodes: int, *, stfn: bool,
                 lif: dict, spiking: bool = True, rho: float = 1.0):
        super().__init__()
        self.T = T
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.norm = STFN(num_nodes, lif["threshold"], rho) if stfn else nn.Identity()
        self.neuron = LIF(**lif) if spiking else nn.Identity()

    def forward(self, x: Tensor, adj: Tensor) -> Tensor:
        if x.is_sparse or x.dim() == 2:  # static input: transform and aggregate once, present T times
            xw = torch.sparse.mm(x, self.linear.weight.t()) if x.is_sparse else self.linear(x)
            s = (propagate(adj, xw) + self.bias).unsqueeze(0).expand(self.T, -1, -1)
        else:
            s = propagate(adj, self.linear(x)) + self.bias
        return self.neuron(self.norm(s))


class SpikingGATConv(nn.Module):
    """Graph attention on the spike features of each step → (STFN) → LIF."""

    def __init__(self, in_features: int, out_features: int, T: int, num_nodes: int, *, stfn: bool, lif: dict,
                 heads: int = 1, concat: bool = True, dropout: float = 0.0, spiking: bool = True, rho: float = 1.0):
        super().__init__()
        self.T = T
        self.conv = GATConv(in_features, out_features, heads=heads, concat=concat, dropout=dropout)
        self.norm = STFN(num_nodes, lif["threshold"], rho) if stfn else nn.Identity()
        self.neuron = LIF(**lif) if spiking else nn.Identity()

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        if x.dim() == 2:
            s = self.conv(x, edge_index).unsqueeze(0).expand(self.T, -1, -1)
        else:
            s = torch.stack([self.conv(x[t], edge_index) for t in range(x.shape[0])])
        return self.neuron(self.norm(s))
