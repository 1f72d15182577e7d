"""Operations per inference of a two-layer graph network, counted from the graph and the
spikes that actually occurred (the layers use sparse products, which forward hooks cannot see).

Conventions: both networks are charged for non-zero input features only (sparse first
layer, which is how both run here); a product with a real-valued operand is a MAC; a weight added for an incoming
binary spike is an accumulate (AC). ``Â``'s entries are real, so aggregation is MACs. With
static input and ``reuse``, the first layer's transform and aggregation run once, not ``T`` times.
"""

from __future__ import annotations


def gcn_ops(num_nodes: int, nnz_adj: int, in_features: int, nnz_x: int, hidden: int, classes: int,
            T: int | None = None, hidden_spikes: float | None = None, reuse: bool = True,
            binary_input: bool = True, stfn: bool = False) -> dict[str, dict[str, float]]:
    """``{"ANN GCN": {...}, "GC-SNN": {...}}`` with ``MAC`` and ``AC`` totals per full-graph inference.

    ``hidden_spikes``: total spikes of the hidden layer over all ``T`` steps and nodes. ``stfn``
    adds about four MACs per normalised element (mean, variance, scale, affine)."""
    # the ANN is charged for its non-zero input features only, as a sparse implementation (ours) runs it
    ann = {"MAC": nnz_x * hidden + nnz_adj * hidden + num_nodes * hidden * classes + nnz_adj * classes, "AC": 0.0}
    out = {"ANN GCN": ann}
    if T is not None and hidden_spikes is not None:
        reps = 1 if reuse else T
        first = nnz_x * hidden * reps
        snn = {"MAC": nnz_adj * hidden * reps + nnz_adj * classes * T + (0 if binary_input else first)
               + (4 * num_nodes * hidden * T if stfn else 0),
               "AC": (first if binary_input else 0) + hidden_spikes * classes}
        out["GC-SNN"] = snn
    return out
