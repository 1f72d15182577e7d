"""Graph spiking networks on PyTorch Geometric: spiking GCN / GAT layers, STFN, baselines."""

from compendium.progress import import_quietly_for_pyg

import_quietly_for_pyg()  # before the first import of PyG, below

from compendium.graph.layers import STFN, SparseOperator, SpikingGATConv, SpikingGCNConv, normalized_adjacency
from compendium.graph.models import (GAT, GCN, NodeClassifier, SpikingGNN, row_normalize,
                                     threshold_scaled_graph_init)

__all__ = ["STFN", "SparseOperator", "SpikingGCNConv", "SpikingGATConv", "normalized_adjacency", "SpikingGNN", "GCN",
           "GAT", "NodeClassifier", "row_normalize", "threshold_scaled_graph_init"]
