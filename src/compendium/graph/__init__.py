"""Graph spiking networks on PyTorch Geometric: spiking GCN / GAT layers, STFN, baselines."""

from compendium.graph.layers import STFN, SparseOperator, SpikingGATConv, SpikingGCNConv, normalized_adjacency
from compendium.graph.models import (GAT, GCN, NodeClassifier, SpikingGNN, row_normalize,
                                     threshold_scaled_graph_init)

__all__ = ["STFN", "SparseOperator", "SpikingGCNConv", "SpikingGATConv", "normalized_adjacency", "SpikingGNN", "GCN",
           "GAT", "NodeClassifier", "row_normalize", "threshold_scaled_graph_init"]
