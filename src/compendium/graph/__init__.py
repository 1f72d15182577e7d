"""Graph spiking networks on PyTorch Geometric: spiking GCN / GAT layers, STFN, baselines."""

from compendium.graph.layers import STFN, SpikingGATConv, SpikingGCNConv, normalized_adjacency
from compendium.graph.models import GAT, GCN, NodeClassifier, SpikingGNN

__all__ = ["STFN", "SpikingGCNConv", "SpikingGATConv", "normalized_adjacency", "SpikingGNN", "GCN", "GAT",
           "NodeClassifier"]
