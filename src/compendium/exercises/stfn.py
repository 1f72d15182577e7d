"""The stfn chapter's checked exercises (see :mod:`compendium.exercises`); its notebook imports
``check`` from here, so only this chapter depends on these reference solutions."""

from __future__ import annotations

import math

from compendium.exercises import check, register

__all__ = ["check"]


def _stfn_entry(self_loops: bool = True) -> float:
    import torch

    from compendium.graph.layers import normalized_adjacency

    edges = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    if not self_loops:
        return 1 / math.sqrt(1 * 2)
    return float(normalized_adjacency(edges, 3).to_dense()[0, 1])


register("stfn", 1, "GCN's normalised adjacency", _stfn_entry,
         "GCN adds self-loops before normalising: Â = D^-1/2 (A + I) D^-1/2 with D the degrees *including* the "
         "self-loop. `compendium.graph.layers.normalized_adjacency(edge_index, 3).to_dense()` computes it.",
         "import torch\nfrom compendium.graph.layers import normalized_adjacency\n\n"
         "edges = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])  # the path 0 - 1 - 2, both directions\n"
         "answer = ...  # the entry (0, 1) of the normalised adjacency (a float)",
         rel=1e-4,
         mistakes=((lambda: _stfn_entry(False), "That normalises without self-loops: GCN adds I before computing degrees."),))
