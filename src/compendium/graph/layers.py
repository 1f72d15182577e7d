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
  (the paper's ``λ^{k,v}`` may also index features; not transcribed). On a static input
  (identical at every step) the statistics over ``(T, C)`` equal those over ``C`` and the
  output is identical at every step, so it is computed once.

Speed (CPU): the constant sparse matrices (``Â``, bag-of-words features) are held as a
:class:`SparseOperator` — CSR for the matrix and for its transpose, so the backward product
``Aᵀ g`` needs no transposition at every step — about ten times faster than PyTorch's COO
``sparse.mm`` with autograd. :func:`dropout` draws its mask from 16-bit slices of 64-bit
counter-based random words (SplitMix64, filled by the compiled kernel on every core), about
twenty times faster than as many words from PyTorch's generator, whose draws for
``nn.functional.dropout`` were the largest cost of a spiking layer's training step on a CPU; it keeps each element with
probability ``1 - p`` (to 2⁻¹⁶) and rescales by ``1 / (1 - p)``, as dropout does. A GC layer
with static input read out as its mean over steps (:meth:`SpikingGCNConv.rate`) never builds a
``[T, N, F]`` array: the compiled kernel of :func:`~compendium.spiking.neuron.lif_static_rate`
runs the ``T`` steps per element and recomputes them in the backward pass; STFN runs as
PyTorch's fused layer norm over each node's ``T·C`` values. That layer's current (``X W``, its
aggregation and STFN) is computed once for an evaluation and the training step after it
(:meth:`SpikingGCNConv.current`): full-batch training evaluates between steps, with the
parameters unchanged until the next one.
"""

from __future__ import annotations

import math
import sys
import warnings
from typing import Iterable

import torch
from torch import Tensor, nn
from torch_geometric.nn import GATConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from compendium.spiking.native import random_words
from compendium.spiking.neuron import LIF, keep_factors, lif_static_rate, unhooked


def normalized_adjacency(edge_index: Tensor, num_nodes: int) -> Tensor:
    """``D^-1/2 (A + I) D^-1/2`` as a sparse ``[N, N]`` tensor (PyG's GCN normalisation)."""
    ei, w = gcn_norm(edge_index, None, num_nodes, add_self_loops=True)
    return torch.sparse_coo_tensor(ei.flip(0), w, (num_nodes, num_nodes), check_invariants=True).coalesce()


_I16_MIN = -(2 ** 15)


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """Inverted dropout (keep with probability ``1 - p``, scale by ``1 / (1 - p)``) with a fast mask.

    The mask compares 16-bit slices of random 64-bit words (:func:`dropout_bits`, keyed by
    PyTorch's generator, so ``torch.manual_seed`` governs it) with ``p · 2¹⁶``: the keep probability is ``1 - p`` to
    within 2⁻¹⁶."""
    if not training or p == 0:
        return x
    bits, thr = dropout_bits(x.shape, p, x.device)
    with torch.no_grad():
        scaled_keep = keep_factors(bits, thr, 1.0 / (1.0 - p), x.dtype)
    return x * scaled_keep


def dropout_bits(shape: tuple[int, ...] | torch.Size, p: float, device: torch.device | str = "cpu") -> tuple[Tensor, int]:
    """The random draws behind :func:`dropout`'s mask: int16 ``bits`` of ``shape`` (16-bit slices of
    random 64-bit words) and the threshold ``thr``; an element is kept where ``bits ≥ thr``, i.e.
    with probability ``1 - p`` to within 2⁻¹⁶.

    The words are SplitMix64's (:func:`~compendium.spiking.native.random_words`) under one key
    drawn from PyTorch's generator, so ``torch.manual_seed`` governs the mask as before; on a CPU
    they cost a twentieth of as many words from ``torch.randint`` (its Mersenne twister was a
    quarter of a GC-SNN training epoch)."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    n = math.prod(int(d) for d in shape)
    key = int(torch.randint(-(2 ** 63), 2 ** 63 - 1, (1,), dtype=torch.int64))
    words = random_words((n + 3) // 4, key, device)
    return words.view(torch.int16)[:n].view(tuple(shape)), _I16_MIN + round(p * 2 ** 16)


# PyTorch calls MKL's sparse routines on CPU only on Linux builds with MKL (elsewhere its own CSR
# kernel, which may scale the output by beta, i.e. read it)
_MKL_SPARSE = sys.platform.startswith("linux") and torch.backends.mkl.is_available()


def csr_matmul(a: Tensor, h: Tensor) -> Tensor:
    """``a h`` for a CSR ``a`` and a dense 2-D ``h``: the same product as ``a @ h``, bit for bit,
    without its overhead on a CPU.

    ``a @ h`` allocates a zero matrix, copies it into a second, fresh one and then lets MKL
    overwrite it (``beta = 0``): two passes over first-touched memory, about as long as the
    sparse product itself for Cora's ``[2708, 64]``. MKL's ``C ← A B + 0 · C`` never reads ``C``,
    so here the result is an uninitialised matrix written once by ``addmm_`` in place. Where
    PyTorch does not use MKL's sparse routines (not Linux, no MKL: its own kernel may scale ``C``
    by ``beta``), off the CPU, or where the dtypes differ, this is ``a @ h``."""
    if _MKL_SPARSE and a.device.type == "cpu" and h.device.type == "cpu" and h.dim() == 2 and a.dtype == h.dtype:
        return torch.empty(a.shape[0], h.shape[1], dtype=h.dtype, device=h.device).addmm_(a, h, beta=0)
    return a @ h


def store_transposed(linear: nn.Linear) -> nn.Linear:
    """Keep ``linear``'s weight ``W [out, in]`` stored column-major (the same values; ``Wᵀ`` is
    then a contiguous ``[in, out]`` matrix), for a layer whose *sparse* input ``X`` is multiplied
    as ``X Wᵀ`` (:class:`SparseOperator`). MKL's sparse product takes only a contiguous dense
    operand: with the default row-major ``W`` every product copied ``Wᵀ`` first and every
    backward pass copied ``Xᵀ g`` back into ``W``'s layout, so the sparse product computes the
    same values from either layout and Adam and weight decay act element by element: training is
    unchanged bit for bit. Only for a sparse input: a *dense* product ``F.linear(x, W)`` takes
    another MKL kernel for a column-major ``W`` and rounds differently (on Cora's
    ``[2708, 64] × [64, 7]``: up to 5e-6 apart, and twice as slow), so
    :class:`~compendium.graph.models.NodeClassifier` applies this to the first layer only once it
    holds the features as a :class:`SparseOperator`. Measured on Cora: 0.93x per epoch of
    GC-SNN+STFN in the bench, 0.97x over whole 200-epoch runs (GCN 0.95x). Call before the
    optimiser is built: the parameter is a new object."""
    linear.weight = nn.Parameter(linear.weight.detach().t().contiguous().t(), requires_grad=linear.weight.requires_grad)
    return linear


class _ConstantSpMM(torch.autograd.Function):
    """``A h`` for a constant sparse ``A`` (CSR) whose transpose ``Aᵀ`` (CSR) is given: the
    gradient is ``Aᵀ g`` for ``h`` and none for ``A``."""

    @staticmethod
    def forward(ctx, a: Tensor, at: Tensor, h: Tensor) -> Tensor:
        ctx.at = at
        return csr_matmul(a, h)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return None, None, csr_matmul(ctx.at, grad.contiguous()) if ctx.needs_input_grad[2] else None


class SparseOperator(nn.Module):
    """A constant sparse matrix ``A [M, K]`` (no gradient) for products ``A h`` with gradient
    to ``h``: CSR copies of ``A`` and ``Aᵀ`` as buffers (they move with the model), and the
    permutation that maps ``A``'s stored values onto ``Aᵀ``'s, so that dropout on the stored
    values (Kipf & Welling's sparse input dropout) applies the same mask to both.

    The CSR indices are held as 32-bit integers where they fit (MKL's LP64 interface takes
    those; 64-bit ones were converted at every product), and ``Aᵀ``'s values, permuted once, as a
    non-persistent buffer: only dropped-out values need permuting again. The operator is
    constant: ``values_t`` follows ``values`` when a state dict is loaded, not after an in-place
    edit of ``values`` (build a new operator for another matrix)."""

    def __init__(self, a: Tensor):
        super().__init__()
        a = (a if a.is_sparse else a.to_sparse()).coalesce()
        M, K = a.shape
        idx, val = a.indices(), a.values()
        perm = torch.argsort(idx[1] * M + idx[0])  # row-major order of the transpose
        self.shape = (int(M), int(K))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            csr = a.to_sparse_csr()
            at = torch.sparse_coo_tensor(idx.flip(0)[:, perm], val[perm], (K, M),
                                         check_invariants=True).coalesce().to_sparse_csr()
        index_dtype = torch.int32 if max(M, K, val.numel()) < 2 ** 31 else torch.int64
        for name, t in (("crow", csr.crow_indices()), ("col", csr.col_indices()), ("values", csr.values()),
                        ("crow_t", at.crow_indices()), ("col_t", at.col_indices()), ("perm", perm)):
            self.register_buffer(name, t.to(index_dtype) if name not in ("values", "perm") else t.clone())
        self.register_buffer("values_t", at.values().clone(), persistent=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        with torch.no_grad():  # Aᵀ's values follow A's (a state saved before values_t existed, or other values)
            self.values_t.copy_(self.values[self.perm])

    @property
    def nnz(self) -> int:
        return int(self.values.numel())

    def to_dense(self) -> Tensor:
        return self.matrix().to_dense()

    def matrix(self, values: Tensor | None = None) -> Tensor:
        """``A`` as a CSR tensor, with ``values`` in place of its stored values if given."""
        return torch.sparse_csr_tensor(self.crow, self.col, self.values if values is None else values, self.shape,
                                       check_invariants=False)

    def forward(self, h: Tensor, value_dropout: float = 0.0, training: bool = False) -> Tensor:
        """``A h`` for ``h [K, F]``; with ``value_dropout`` (in training) on ``A``'s stored values."""
        dropped = bool(value_dropout and training)
        vals = dropout(self.values, value_dropout, training) if dropped else self.values
        a = self.matrix(vals)
        if not (torch.is_grad_enabled() and h.requires_grad):
            return csr_matmul(a, h)
        at = torch.sparse_csr_tensor(self.crow_t, self.col_t, vals[self.perm] if dropped else self.values_t,
                                     (self.shape[1], self.shape[0]), check_invariants=False)
        return _ConstantSpMM.apply(a, at, h)


def tensor_state(tensors: Iterable[Tensor]) -> tuple:
    """A key that changes when one of ``tensors`` is written in place through autograd's view of
    it or replaced: each one's storage address and version counter (bumped by every in-place
    operation on the tensor: an optimiser step, ``mul_``, ``load_state_dict``'s copy; not by
    writes through ``.data``, NumPy views or raw pointers) and whether it requires a gradient (a
    recorded graph that leaves a tensor out is not the graph of one that requires it)."""
    return tuple((t.data_ptr(), t._version, t.requires_grad) for t in tensors)


def matmul(a: Tensor | SparseOperator, h: Tensor) -> Tensor:
    """``a h`` for a :class:`SparseOperator`, a sparse COO tensor or a dense matrix."""
    if isinstance(a, SparseOperator):
        return a(h)
    return torch.sparse.mm(a, h) if a.is_sparse else a @ h


def propagate(adj: Tensor | SparseOperator, h: Tensor) -> Tensor:
    """``Â h`` for ``h`` of shape ``[N, F]`` or ``[T, N, F]`` (one sparse product for all steps)."""
    if h.dim() == 2:
        return matmul(adj, h)
    T, N, F = h.shape
    out = matmul(adj, h.permute(1, 0, 2).reshape(N, T * F))
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
        T, N, C = s.shape
        if T == 1:
            return self.static(s[0]).unsqueeze(0)
        # (S - E[S^v]) / sqrt(Var[S^v] + eps) per node over its (T, C) values is a layer norm over
        # each node's T·C values: PyTorch's fused kernel (one pass, closed-form backward) instead of
        # a chain of mean, var, sub, div and sqrt over [T, N, C] and their autograd nodes
        z = nn.functional.layer_norm(s.permute(1, 0, 2).reshape(N, T * C), (T * C,), eps=self.eps)
        return self._affine(z.reshape(N, T, C).permute(1, 0, 2))

    def static(self, s: Tensor) -> Tensor:
        """STFN of a static input ``s [N, C]`` (the same at every step, so its statistics over
        ``(T, C)`` are those over ``C``): ``[N, C]``, the output of every step. Working on the
        ``[N, C]`` matrix itself spares the ``[1, N, C]`` view's select, whose backward pass
        zero-fills and copies a full gradient."""
        if s.dim() != 2 or s.shape[0] != self.weight.shape[0]:
            raise ValueError(f"STFN.static expects [N={self.weight.shape[0]}, C], got {tuple(s.shape)}")
        return self._affine(nn.functional.layer_norm(s, (s.shape[1],), eps=self.eps))

    def _affine(self, z: Tensor) -> Tensor:
        """``Y = λ^v ρ V_th Ẑ + γ^v`` for the normalised ``z`` (``[N, C]`` or ``[T, N, C]``): one fused
        multiply-add per element."""
        return torch.addcmul(self.bias, self.weight * (self.rho * self.threshold), z)


class SpikingGCNConv(nn.Module):
    """Graph convolution → (STFN) → LIF, multi-step. Input ``[N, F]`` (static: a dense matrix,
    a sparse COO tensor or a :class:`SparseOperator`) or ``[T, N, F]``."""

    def __init__(self, in_features: int, out_features: int, T: int, num_nodes: int, *, stfn: bool,
                 lif: dict, spiking: bool = True, rho: float = 1.0):
        super().__init__()
        self.T = T
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.norm = STFN(num_nodes, lif["threshold"], rho) if stfn else nn.Identity()
        self.neuron = LIF(**lif) if spiking else nn.Identity()

    # see current(); set on the instance when kept (the class's None also serves a layer
    # unpickled from before the memo existed)
    _memo: tuple[tuple, Tensor] | None = None

    def __getstate__(self) -> dict:
        # the memo holds a recorded graph (deepcopy refuses a non-leaf tensor): copies start without it
        state = super().__getstate__()
        state["_memo"] = None
        return state

    def static(self, x: Tensor | SparseOperator, adj: Tensor | SparseOperator) -> Tensor:
        """``Â (X W) + b`` for a static ``x``: ``[N, out]``, once for all steps."""
        if isinstance(x, SparseOperator) or x.is_sparse:
            xw = matmul(x, self.linear.weight.t())
        else:
            xw = self.linear(x)
        return propagate(adj, xw) + self.bias

    def current(self, x: Tensor | SparseOperator, adj: Tensor | SparseOperator) -> Tensor:
        """The neuron's current for a static ``x``, the same at every step: ``STFN(Â (X W) + b)``
        (without STFN ``Â (X W) + b``), ``[N, out]``; it does not depend on the training mode (no
        input dropout, and STFN keeps no running statistics).

        Memoised across an evaluation and the training step after it. Full-batch training
        evaluates the graph after each optimiser step and then, with the parameters unchanged,
        starts the next step on the same graph: the same current, computed twice (for a GC-SNN
        on Cora or CiteSeer the sparse products ``X W`` and ``Â (X W)`` and STFN are a tenth of
        an epoch). So a call without gradient records the graph of its result anyway (under
        ``torch.enable_grad``) and keeps it; the next call with gradient takes it, once, if the
        key of every tensor the current reads (:func:`tensor_state`: ``W``, ``b``, STFN's
        parameters, ``x``'s and ``adj``'s values) is unchanged, and otherwise computes afresh.
        The values, and the gradients through them, are those of a fresh computation bit for
        bit: the same operations on the same tensors, and no random draw is involved.

        No memo is kept or taken under inference mode or autocast (an evaluation outside
        autocast is not the training step's computation), with hooks on ``linear``, ``x`` or
        ``adj`` (they must see every call), for inputs that are sparse tensors rather than
        :class:`SparseOperator` (no storage to key on), or when nothing read requires a
        gradient. Writes that bypass version counters (through ``.data``, NumPy views, raw
        pointers) are not seen; nor does the memo suit activation checkpointing or
        ``torch.func`` transforms, which must recompute the current themselves."""
        read = self._read(x, adj)
        if not torch.is_grad_enabled():
            if read is None or not any(t.requires_grad for t in read):
                return self._current(x, adj)
            with torch.enable_grad():
                s = self._current(x, adj)
            self._memo = (self._memo_key(x, adj, read), s)
            return s.detach()
        memo, self._memo = self._memo, None
        if memo is not None and read is not None and memo[0] == self._memo_key(x, adj, read):
            return memo[1]
        return self._current(x, adj)

    def _current(self, x: Tensor | SparseOperator, adj: Tensor | SparseOperator) -> Tensor:
        s = self.static(x, adj)
        return self.norm.static(s) if isinstance(self.norm, STFN) else s

    def _read(self, x: Tensor | SparseOperator, adj: Tensor | SparseOperator) -> list[Tensor] | None:
        """The tensors :meth:`_current` reads, or ``None`` where the memo must not be used (see
        :meth:`current`)."""
        ops = [a for a in (x, adj) if isinstance(a, SparseOperator)]
        if any(not isinstance(a, SparseOperator) and a.layout != torch.strided for a in (x, adj)):
            return None
        if torch.is_inference_mode_enabled() or torch.is_autocast_enabled(self.bias.device.type) \
                or not unhooked(self.linear, *ops):
            return None
        inputs = [t for a in (x, adj) for t in (a.buffers() if isinstance(a, SparseOperator) else [a])]
        return [self.linear.weight, self.bias, *self.norm.parameters(), *self.norm.buffers(), *inputs]

    def _memo_key(self, x: Tensor | SparseOperator, adj: Tensor | SparseOperator, read: list[Tensor]) -> tuple:
        consts = (self.norm.threshold, self.norm.eps) if isinstance(self.norm, STFN) else ()
        return (id(x), id(adj), consts, tensor_state(read))

    def presynaptic(self, x: Tensor | SparseOperator, adj: Tensor | SparseOperator) -> Tensor:
        """The neuron's input ``[T, N, out]`` (after STFN when present)."""
        if isinstance(x, SparseOperator) or x.dim() == 2:  # static input: transform, aggregate, normalise once
            s = self.static(x, adj).unsqueeze(0)
            return self.norm(s).expand(self.T, -1, -1)
        return self.norm(propagate(adj, self.linear(x)) + self.bias)

    def forward(self, x: Tensor | SparseOperator, adj: Tensor | SparseOperator) -> Tensor:
        return self.neuron(self.presynaptic(x, adj))

    def rate(self, x: Tensor | SparseOperator, adj: Tensor | SparseOperator, dropout_p: float = 0.0,
             training: bool = False) -> Tensor:
        """``mean_t dropout(o_t)``: the layer's spikes, dropped out per step with ``dropout_p`` in
        training, averaged over the ``T`` steps (``[N, out]``).

        With a static input the neuron's current is the same at every step, so this is
        :func:`~compendium.spiking.neuron.lif_static_rate` on ``[N, out]`` (no ``[T, N, out]``
        arrays; the dropout draws are :func:`dropout`'s, in the same order). Otherwise — a
        ``[T, N, F]`` input, a neuron that is not a fixed multi-step LIF, or hooks on the neuron
        (the initialisation's measurements, firing-rate probes), which must see its call — it is
        the layer's forward, :func:`dropout` and the mean."""
        n = self.neuron
        fused = (isinstance(n, LIF) and n.step_mode == "multi" and not n.record_mem and unhooked(n, self.norm)
                 and not n.beta.requires_grad and not n.threshold.requires_grad
                 and (isinstance(x, SparseOperator) or x.dim() == 2))
        if not fused:
            return dropout(self(x, adj), dropout_p, training).mean(0)
        s = self.current(x, adj)  # the current of every step
        bits, thr, scale = None, 0, 1.0
        if training and dropout_p:
            bits, thr = dropout_bits((self.T, *s.shape), dropout_p, s.device)
            scale = 1.0 / (1.0 - dropout_p)
        return lif_static_rate(s, self.T, float(n.beta), float(n.threshold), n.reset, n.detach_reset, n.surrogate,
                               keep_bits=bits, keep_threshold=thr, keep_scale=scale)


class SpikingGATConv(nn.Module):
    """Graph attention on the spike features of each step → (STFN) → LIF."""

    def __init__(self, in_features: int, out_features: int, T: int, num_nodes: int, *, stfn: bool, lif: dict,
                 heads: int = 1, concat: bool = True, dropout: float = 0.0, spiking: bool = True, rho: float = 1.0):
        super().__init__()
        self.T = T
        self.conv = GATConv(in_features, out_features, heads=heads, concat=concat, dropout=dropout)
        self.norm = STFN(num_nodes, lif["threshold"], rho) if stfn else nn.Identity()
        self.neuron = LIF(**lif) if spiking else nn.Identity()

    def presynaptic(self, x: Tensor, edge_index: Tensor) -> Tensor:
        """The neuron's input ``[T, N, out]`` (after STFN when present)."""
        if x.dim() == 2:  # static input: attention, aggregation and normalisation once
            return self.norm(self.conv(x, edge_index).unsqueeze(0)).expand(self.T, -1, -1)
        return self.norm(torch.stack([self.conv(xt, edge_index) for xt in x.unbind(0)]))  # unbind: as PerStepBN

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return self.neuron(self.presynaptic(x, edge_index))
