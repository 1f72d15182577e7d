"""Operations per inference of a two-layer graph network, counted from the graph and the
spikes that actually occurred (the layers use sparse products, which forward hooks cannot see).

Conventions: both networks are charged for non-zero input features only (sparse first
layer, which is how both run here); a product with a real-valued operand is a MAC; a weight added for an incoming
binary spike is an accumulate (AC). ``Â``'s entries are real, so aggregation is MACs. With
static input and ``reuse``, the first layer's transform, aggregation and STFN run once, not ``T``
times (their input, hence their output, is the same at every step). The rate readout is linear,
``Σ_t Â (o_t W) = Â (Σ_t o_t W)``: each spike adds its row of ``W`` (an AC, over all steps),
and one aggregation follows — what :class:`~compendium.graph.models.SpikingGNN` computes;
``readout_once=False`` charges the aggregation at every step instead.
"""

from __future__ import annotations


def gcn_ops_parts(num_nodes: int, nnz_adj: int, nnz_x: int, hidden: int, classes: int, T: int | None = None,
                  hidden_spikes: float | None = None, reuse: bool = True, binary_input: bool = True,
                  stfn: bool = False, readout_once: bool = True) -> dict[str, dict[str, tuple[str, float]]]:
    """Per network, each component's ``(kind, count)``, kind ``"MAC"`` or ``"AC"``.

    ``hidden_spikes``: total spikes of the hidden layer over all ``T`` steps and nodes. ``stfn``
    adds about four MACs per normalised element (mean, variance, scale, affine)."""
    # the ANN is charged for its non-zero input features only, as a sparse implementation (ours) runs it
    out = {"ANN GCN": {"layer-1 transform": ("MAC", nnz_x * hidden), "layer-1 aggregation": ("MAC", nnz_adj * hidden),
                       "layer-2 transform": ("MAC", num_nodes * hidden * classes),
                       "layer-2 aggregation": ("MAC", nnz_adj * classes)}}
    if T is not None and hidden_spikes is not None:
        reps = 1 if reuse else T
        snn = {"layer-1 transform": ("AC" if binary_input else "MAC", nnz_x * hidden * reps),
               "layer-1 aggregation": ("MAC", nnz_adj * hidden * reps),
               "layer-2 transform (on spikes)": ("AC", hidden_spikes * classes),
               "layer-2 aggregation": ("MAC", nnz_adj * classes * (1 if readout_once else T))}
        if stfn:
            snn["STFN"] = ("MAC", 4 * num_nodes * hidden * reps)
        out["GC-SNN"] = snn
    return out


def gcn_ops(num_nodes: int, nnz_adj: int, in_features: int, nnz_x: int, hidden: int, classes: int,
            T: int | None = None, hidden_spikes: float | None = None, reuse: bool = True,
            binary_input: bool = True, stfn: bool = False, readout_once: bool = True) -> dict[str, dict[str, float]]:
    """``{"ANN GCN": {"MAC": .., "AC": ..}, "GC-SNN": {...}}`` per full-graph inference
    (totals of :func:`gcn_ops_parts`; ``in_features`` is kept for the call signature's clarity)."""
    parts = gcn_ops_parts(num_nodes, nnz_adj, nnz_x, hidden, classes, T, hidden_spikes, reuse, binary_input, stfn,
                          readout_once)
    return {net: {"MAC": float(sum(n for k, n in comp.values() if k == "MAC")),
                  "AC": float(sum(n for k, n in comp.values() if k == "AC"))} for net, comp in parts.items()}
