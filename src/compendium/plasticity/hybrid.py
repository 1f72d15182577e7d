"""A spiking layer whose synapses combine a backprop-trained weight and a Hebbian trace.

Hybrid synapse (the official code's form, research notes §4.3 [verified in code]): with
presynaptic input ``x[t]`` (``[B, in]``) and the layer's membrane ``u`` (``[B, out]``),

    I[t] = x[t] W^T  +  α · x[t] P[t-1]                          (global + local current)
    u[t], o[t] = LIF(u[t-1], o[t-1], I[t])                     (HP soft reset: u = k(u - θo) + I)
    P[t] = clamp(λ P[t-1] + mean_b[(x[t] ⊙ β)^T tanh(u[t]/θ - η)], -c, c)

``W`` is the global-plasticity (GP) weight, trained by BPTT; ``P`` (``[in, out]``) the local
Hebbian trace; ``α`` (scalar), ``β`` (per presynaptic neuron, a learning rate) and ``η`` (per
postsynaptic neuron, a BCM-like sliding threshold) are the *meta-local* parameters, learned by
backpropagation through the local updates with their own, slower optimiser (the two-phase /
two-timescale scheme: :func:`two_timescale_adam`). ``λ`` (trace decay) and ``c`` (clip) are
fixed. The per-step loop is needed because the trace at ``t`` depends on ``t-1``; with direct
coding (one input at every step) and the clip provably inactive, the loop runs in an equivalent
Gram-matrix form that never forms the trace inside it (:meth:`PlasticLIF._forward_constant_input`). The
initial α, β, η are the means of the official code's random initialisation (``0.01·U(0,1)``);
the official per-step input scaling ``exp(-t/τ_w)`` (τ_w = 40, ≥ 0.9 over 5 steps) is left out.

Modes, as in the official simple example:

- ``"gp"``: ``α = 0``, no trace — a plain STBP layer;
- ``"lp"``: ``W`` random and frozen, ``α, β, η`` fixed at their initial values — only the
  Hebbian trace learns in this layer (the readout is still trained by gradient);
- ``"hp"``: ``W`` trained and ``α, β, η`` meta-learned.

The trace persists across forward calls (detached, like the official code, which carries it
across mini-batches and into testing) unless ``persistent=False`` or :meth:`reset_trace`.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from compendium.spiking import native
from compendium.spiking.layers import Encoder
from compendium.spiking.neuron import lif_step
from compendium.spiking.surrogate import Rectangular

MODES = ("gp", "lp", "hp")


class _TraceUpdate(torch.autograd.Function):
    # The compiled kernel (compendium.spiking.native) computes the eager operations in their
    # order, forward and backward, in one pass each instead of four and five passes over the
    # [in, out] trace, which (at 784 × 256) does not fit in a core's cache: the hybrid chapter's
    # HP step with the trace at the clip takes 0.91 × its eager time (bench/trace_update.py).
    @staticmethod
    def forward(ctx, trace: Tensor, hebb: Tensor, decay: float, batch: int, clip: float) -> Tensor:
        out, keep = native.trace_update_forward(trace, hebb, decay, batch, clip)
        ctx.save_for_backward(keep)
        ctx.params = (decay, batch)
        return out

    @staticmethod
    @once_differentiable  # the kernel's gradient has no graph of its own: a double backward must raise
    def backward(ctx, grad: Tensor):
        (keep,) = ctx.saved_tensors
        decay, batch = ctx.params
        g_trace, g_hebb = native.trace_update_backward(grad, keep, decay, batch, ctx.needs_input_grad[0],
                                                       ctx.needs_input_grad[1])
        return g_trace, g_hebb, None, None, None


def trace_update(trace: Tensor, hebb: Tensor, decay: float, batch: int, clip: float) -> Tensor:
    """The trace step of the hybrid synapse (module docstring), ``P[t] = clamp(λ P[t-1] + H / B,
    -c, c)``, with ``hebb`` the batch *sum* ``H = (x[t] ⊙ β)^T post[t]`` (or a per-sample product
    with ``batch = 1``). The compiled kernel where it takes the tensors, else the same eager
    operations; the two agree bit for bit, forward and backward (``tests/test_plasticity.py``)."""
    if native.supports_trace_update(trace, hebb):
        return _TraceUpdate.apply(trace, hebb, float(decay), int(batch), float(clip))
    return torch.clamp(decay * trace + hebb / batch, -clip, clip)


class PlasticLIF(nn.Module):
    """Linear synapses (+ Hebbian trace) into LIF neurons, over ``[T, B, in]`` → spikes ``[T, B, out]``."""

    def __init__(self, in_features: int, out_features: int, mode: str = "hp", *, decay: float = 0.4,
                 threshold: float = 0.4, trace_decay: float = 0.99, clip: float = 4.0, alpha: float = 0.005,
                 beta: float = 0.005, eta: float = 0.005, persistent: bool = True, per_sample: bool = False):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode, self.decay, self.threshold = mode, decay, threshold
        self.trace_decay, self.clip, self.persistent, self.per_sample = trace_decay, clip, persistent, per_sample
        if per_sample and persistent:
            raise ValueError("a per-sample trace (one per episode) cannot persist across batches")
        self.linear = nn.Linear(in_features, out_features)
        self.surrogate = Rectangular()
        if mode == "lp":
            self.linear.requires_grad_(False)
        plastic = mode != "gp"
        learn = mode == "hp"
        self.alpha = nn.Parameter(torch.tensor(alpha if plastic else 0.0), requires_grad=learn)
        self.beta = nn.Parameter(torch.full((in_features,), beta), requires_grad=learn)
        self.eta = nn.Parameter(torch.full((out_features,), eta), requires_grad=learn)
        self.register_buffer("trace", torch.zeros(in_features, out_features))

    @property
    def plastic(self) -> bool:
        return self.mode != "gp"

    def reset_trace(self) -> None:
        self.trace.zero_()

    def forward(self, x: Tensor, extra: Tensor | None = None, return_membrane: bool = False):
        """``x [T, B, in]`` → spikes ``[T, B, out]`` (and the last membrane ``[B, out]``).
        ``extra [T, B, out]`` is added to the current (e.g. a label fed during support steps).
        With ``per_sample`` every sample keeps its own trace ``[B, in, out]`` for the call
        (few-shot episodes); otherwise one trace, averaged over the batch as in the paper's code."""
        T, B = x.shape[:2]
        constant = T > 1 and x.stride(0) == 0  # direct coding: one input at every step (a broadcast view)
        if constant:
            drive = self.linear(x[0]).unsqueeze(0).expand(T, B, -1)  # W x computed once
        else:
            drive = self.linear(x.reshape(T * B, -1)).reshape(T, B, -1)  # the W part, all steps at once
        if extra is not None:
            drive = drive + extra
        if constant and self.plastic and not self.per_sample and self._clip_cannot_bind(x[0], T):
            return self._forward_constant_input(x[0], drive, return_membrane)
        u = torch.zeros_like(drive[0])
        if self.per_sample:
            trace = x.new_zeros(B, *self.trace.shape)
        else:
            trace = self._start_trace()
        spikes = []
        # unbind, not x[t]: one backward node stacks the steps' gradients, where T selects would
        # each scatter theirs into a zero tensor of the whole [T, B, ·] and sum those (same values)
        drives, xs = drive.unbind(0), x.unbind(0)
        for t in range(T):
            current, xt = drives[t], xs[t]
            if self.plastic:
                local = torch.bmm(xt.unsqueeze(1), trace).squeeze(1) if self.per_sample else xt @ trace
                current = current + self.alpha * local
            o, u = lif_step(current, u, self.decay, self.threshold, reset="subtract_decayed", surrogate=self.surrogate)
            if self.plastic:
                post = torch.tanh(u / self.threshold - self.eta)
                if self.per_sample:
                    trace = trace_update(trace, (xt * self.beta).unsqueeze(2) * post.unsqueeze(1), self.trace_decay,
                                         1, self.clip)
                else:
                    # one matmul of the batch sum instead of the official bmm(...).mean(0) (identical
                    # values, 18x faster); trace_update divides it by B
                    trace = trace_update(trace, (xt * self.beta).transpose(0, 1) @ post, self.trace_decay, B,
                                         self.clip)
            spikes.append(o)
        if self.plastic and self.persistent:
            self.trace.copy_(trace.detach())
        out = torch.stack(spikes)
        return (out, u) if return_membrane else out

    def _start_trace(self) -> Tensor:
        return self.trace if self.persistent else torch.zeros_like(self.trace)

    @torch.no_grad()
    def _clip_cannot_bind(self, x0: Tensor, T: int) -> bool:
        """Whether the clip at ±c provably stays inactive for ``T`` steps of input ``x0``: every
        Hebbian increment is bounded by ``max_b |x_bi| |β_i|`` (``|tanh| ≤ 1``, a batch mean), so
        with ``0 ≤ λ ≤ 1`` the trace stays below ``max|P[0]| + T · max_i(max_b |x_bi| |β_i|)``."""
        if not 0.0 <= self.trace_decay <= 1.0:
            return False
        step = float((x0.abs().amax(0) * self.beta.abs()).max())
        return float(self._start_trace().abs().max()) + T * step <= self.clip

    def _forward_constant_input(self, x0: Tensor, drive: Tensor, return_membrane: bool):
        """The recurrence of :meth:`forward` for an input ``x0 [B, in]`` that is the same at every
        step, while the clip cannot bind (:meth:`_clip_cannot_bind`). The local current needs
        only ``L[t] = x0 P[t-1]``, and unrolling ``P[t] = λP[t-1] + (x0 ⊙ β)^T post[t] / B`` gives

            L[1] = x0 P[0],    L[t+1] = λ L[t] + G post[t],    G = x0 (x0 ⊙ β)^T / B   ([B, B]),

        so each step costs a ``[B, B] × [B, out]`` product instead of two ``[B, in] × [in, out]``
        ones (forward and backward); the same values up to floating-point rounding. The final
        trace ``P[T] = λ^T P[0] + (x0 ⊙ β)^T Σ_t λ^(T-t) post[t] / B`` is formed once, for the
        persistent trace."""
        T, B = drive.shape[:2]
        lam = self.trace_decay
        xb = x0 * self.beta
        gram = x0 @ xb.transpose(0, 1) / B
        trace0 = self._start_trace()
        local = x0 @ trace0
        u = torch.zeros_like(drive[0])
        spikes, posts = [], []
        drives = drive.unbind(0)  # as in forward: one backward node for the steps' gradients
        for t in range(T):
            o, u = lif_step(drives[t] + self.alpha * local, u, self.decay, self.threshold, reset="subtract_decayed",
                            surrogate=self.surrogate)
            post = torch.tanh(u / self.threshold - self.eta)
            posts.append(post)
            if t < T - 1:
                local = lam * local + gram @ post
            spikes.append(o)
        if self.persistent:
            with torch.no_grad():
                weighted = sum(lam ** (T - 1 - t) * p for t, p in enumerate(posts))
                final = lam ** T * trace0 + xb.transpose(0, 1) @ weighted / B
                self.trace.copy_(torch.clamp(final, -self.clip, self.clip))
        out = torch.stack(spikes)
        return (out, u) if return_membrane else out

    def meta_parameters(self) -> list[nn.Parameter]:
        return [p for p in (self.alpha, self.beta, self.eta) if p.requires_grad]

    def extra_repr(self) -> str:
        return (f"mode={self.mode}, decay={self.decay}, threshold={self.threshold}, trace_decay={self.trace_decay}, "
                f"clip={self.clip}, persistent={self.persistent}")


class HybridMLP(nn.Module):
    """Encoded input → :class:`PlasticLIF` hidden layer → linear readout, averaged over ``T``
    steps (the book's current readout; the official code reads the last step's membrane with
    MSE — stated in the chapter). ``encoding``: ``"direct"`` (analog currents, the official
    code's choice) or ``"rate"`` (Bernoulli spikes)."""

    def __init__(self, sizes: tuple[int, int, int] = (784, 512, 10), mode: str = "hp", T: int = 5,
                 encoding: str = "direct", **plastic_kw):
        super().__init__()
        self.T, self.mode = T, mode
        self.flatten = nn.Flatten()
        self.encoder = Encoder(encoding, T)
        self.hidden = PlasticLIF(sizes[0], sizes[1], mode, **plastic_kw)
        self.readout = nn.Linear(sizes[1], sizes[2])

    def forward(self, x: Tensor) -> Tensor:
        spikes = self.hidden(self.encoder(self.flatten(x)))
        return self.readout(spikes.mean(0))


def firing_rates(model: nn.Module, x: Tensor) -> list[float]:
    """Mean spike rate of every :class:`PlasticLIF` layer of ``model`` on ``x`` (forward order),
    in training mode as during training; buffers (the persistent Hebbian traces) are restored
    afterwards, so the check leaves the model as it was. A layer at rate 0 passes no gradient
    through its surrogate window and cannot learn for a trivial reason."""
    from compendium.spiking.init import firing_rates as neuron_rates

    return neuron_rates(model, x, kinds=(PlasticLIF,))


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(global, meta)``: trainable synaptic weights/biases, and the meta-local parameters."""
    meta_ids = {id(p) for m in model.modules() if isinstance(m, PlasticLIF) for p in m.meta_parameters()}
    glob = [p for p in model.parameters() if p.requires_grad and id(p) not in meta_ids]
    meta = [p for p in model.parameters() if p.requires_grad and id(p) in meta_ids]
    return glob, meta


def two_timescale_adam(model: nn.Module, meta_lr: float) -> "callable":
    """An optimiser factory for :func:`compendium.learning.fit`: Adam with the given ``lr`` on
    the global weights and ``meta_lr`` on the meta-local parameters (the official code's two
    optimisers, as two parameter groups of one)."""
    def make(params: Iterable[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        glob, meta = split_parameters(model)
        groups = [{"params": glob, "lr": lr}] + ([{"params": meta, "lr": meta_lr}] if meta else [])
        return torch.optim.Adam(groups)
    return make
