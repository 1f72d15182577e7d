"""The leaky integrate-and-fire neuron in the STBP form, its variants, and a snntorch module.

Discrete LIF (Wu et al. 2018, STBP, Eqs. 1–3; the form of every Tsinghua-group paper in
this book), with input current ``I[t]``, decay ``k``, threshold ``V_th`` and spike ``o``:

    zero (hard) reset:      u[t] = k · u[t-1] · (1 - o[t-1]) + I[t]
    subtract (soft) reset:  u[t] = k · u[t-1] + I[t] - V_th · o[t-1]        (snntorch "subtract")
    subtract_decayed:       u[t] = k · (u[t-1] - V_th · o[t-1]) + I[t]      (hybrid-plasticity code)
    spike:                  o[t] = H(u[t] - V_th)

``detach_reset`` says whether the reset path carries gradient: the STBP papers
back-propagate through ``o[t-1]`` in the reset (``False``); snntorch detaches it (``True``).

Two implementations of the same equations:

- :func:`lif_sequence_reference` — a plain autograd loop, the readable reference, also used
  when ``k`` or ``V_th`` are learnable tensors;
- :func:`lif_sequence` — a fused autograd function with the BPTT backward written out
  (below), several times cheaper in memory and time; tests hold it equal to the reference.

BPTT through the recurrence (``δ`` = total gradient w.r.t. ``u[t]``, ``h`` the surrogate):

    g_o[t] = ∂L/∂o[t] + δ[t+1] · ∂u[t+1]/∂o[t]          (second term absent when detached)
    δ[t]   = g_o[t] · h(u[t] - V_th) + ∂L/∂u[t] + δ[t+1] · ∂u[t+1]/∂u[t]
    ∂L/∂I[t] = δ[t]

with ``∂u[t+1]/∂u[t] = k(1 - o[t])`` and ``∂u[t+1]/∂o[t] = -k u[t]`` for the zero reset,
``k`` and ``-V_th`` for subtract, ``k`` and ``-k V_th`` for subtract_decayed.
"""

from __future__ import annotations

from typing import Literal

import snntorch
import torch
from torch import Tensor, nn

from compendium.spiking import native
from compendium.spiking.surrogate import Rectangular, Surrogate

Reset = Literal["zero", "subtract", "subtract_decayed"]
RESETS = ("zero", "subtract", "subtract_decayed")


def _check(reset: str) -> None:
    if reset not in RESETS:
        raise ValueError(f"reset must be one of {RESETS}, got {reset!r}")


def lif_step(current: Tensor, mem: Tensor, decay: float | Tensor, threshold: float | Tensor,
             reset: Reset = "zero", detach_reset: bool = False, surrogate: Surrogate | None = None) -> tuple[Tensor, Tensor]:
    """One step: from the previous membrane ``mem`` (= ``u[t-1]``) and ``current`` (= ``I[t]``)
    return ``(o[t], u[t])``. The previous spike is recomputed as ``H(u[t-1] - V_th)``, as
    snntorch does, so the state is the membrane alone."""
    _check(reset)
    surrogate = surrogate or Rectangular()
    prev = surrogate(mem - threshold)
    if detach_reset:
        prev = prev.detach()
    if reset == "zero":
        u = decay * mem * (1 - prev) + current
    elif reset == "subtract":
        u = decay * mem + current - threshold * prev
    else:
        u = decay * (mem - threshold * prev) + current
    return surrogate(u - threshold), u


def lif_sequence_reference(current: Tensor, decay: float | Tensor, threshold: float | Tensor, reset: Reset = "zero",
                           detach_reset: bool = False, surrogate: Surrogate | None = None) -> tuple[Tensor, Tensor]:
    """Plain-autograd multi-step LIF over ``current [T, ...]``; returns ``(spikes, membranes)``."""
    _check(reset)
    surrogate = surrogate or Rectangular()
    u = torch.zeros_like(current[0])
    o = torch.zeros_like(current[0])
    spikes, mems = [], []
    for t in range(current.shape[0]):
        prev = o.detach() if detach_reset else o
        if reset == "zero":
            u = decay * u * (1 - prev) + current[t]
        elif reset == "subtract":
            u = decay * u + current[t] - threshold * prev
        else:
            u = decay * (u - threshold * prev) + current[t]
        o = surrogate(u - threshold)
        spikes.append(o)
        mems.append(u)
    return torch.stack(spikes), torch.stack(mems)


_RESET_CODE = {"zero": 0, "subtract": 1, "subtract_decayed": 2}


class _LIFSequence(torch.autograd.Function):
    # Written for memory traffic, which dominates on a CPU: every step is two or three fused
    # float passes written in place into the [T, ...] outputs, spikes stay float (boolean masks
    # and torch.where are an order of magnitude slower here), and gradients nobody asked for
    # are not materialised. bench/step_time.py measures the effect.
    # Where the compiled kernel (compendium.spiking.native) takes the input, it computes the same
    # numbers in one pass over memory per direction and saves only the membranes (its backward
    # recomputes the hard reset's spikes from them, so the spikes can be freed after the next layer).
    @staticmethod
    def forward(ctx, current: Tensor, decay: float, threshold: float, reset: int, detach_reset: bool,
                surrogate: Surrogate):
        ctx.set_materialize_grads(False)
        ctx.params = (decay, threshold, reset, detach_reset, surrogate)
        ctx.native = native.supports(current)
        if ctx.native:
            spikes, mems = native.forward(current, decay, threshold, reset)
            ctx.save_for_backward(mems)
            return spikes, mems
        mems = torch.empty_like(current)
        # the zero reset works with the "did not fire" mask keep = 1 - o, the others with o
        flags = torch.empty_like(current)
        compare = torch.le if reset == 0 else torch.gt
        mems[0].copy_(current[0])
        compare(mems[0], threshold, out=flags[0])
        for t in range(1, current.shape[0]):
            u, u_prev, f_prev = mems[t], mems[t - 1], flags[t - 1]
            if reset == 0:  # u = k u (1 - o) + I
                torch.addcmul(current[t], u_prev, f_prev, value=decay, out=u)
            elif reset == 1:  # u = k u + I - V_th o
                torch.add(current[t], u_prev, alpha=decay, out=u)
                u.sub_(f_prev, alpha=threshold)
            else:  # u = k (u - V_th o) + I
                torch.add(u_prev, f_prev, alpha=-threshold, out=u)
                torch.add(current[t], u, alpha=decay, out=u)
            compare(u, threshold, out=flags[t])
        ctx.save_for_backward(flags, mems)
        spikes = torch.rsub(flags, 1.0) if reset == 0 else flags
        return spikes, mems

    @staticmethod
    def backward(ctx, grad_spikes: Tensor | None, grad_mems: Tensor | None):
        decay, threshold, reset, detach_reset, surrogate = ctx.params
        if ctx.native:
            (mems,) = ctx.saved_tensors
            return (native.backward(mems, grad_spikes, grad_mems, decay, threshold, reset, detach_reset,
                                    surrogate), None, None, None, None, None)
        flags, mems = ctx.saved_tensors  # flags: 1 - o for the zero reset, o otherwise
        grad_current = torch.empty_like(mems)
        delta_next: Tensor | None = None  # δ[t+1]
        for t in range(mems.shape[0] - 1, -1, -1):
            delta = grad_current[t]
            g_o = grad_spikes[t] if grad_spikes is not None else None
            if delta_next is not None and not detach_reset:  # the reset path, ∂u[t+1]/∂o[t]
                if reset == 0:
                    g_o = torch.addcmul(g_o if g_o is not None else torch.zeros_like(delta), delta_next, mems[t],
                                        value=-decay)
                else:
                    c = threshold if reset == 1 else decay * threshold
                    g_o = torch.add(g_o if g_o is not None else torch.zeros_like(delta), delta_next, alpha=-c)
            if g_o is not None:
                torch.sub(mems[t], threshold, out=delta)
                surrogate.grad_(delta)
                delta.mul_(g_o)
            else:
                delta.zero_()
            if grad_mems is not None:
                delta.add_(grad_mems[t])
            if delta_next is not None:  # the leak path, ∂u[t+1]/∂u[t]
                if reset == 0:  # k (1 - o[t])
                    delta.addcmul_(delta_next, flags[t], value=decay)
                else:
                    delta.add_(delta_next, alpha=decay)
            delta_next = delta
        return grad_current, None, None, None, None, None


def lif_sequence(current: Tensor, decay: float | Tensor, threshold: float | Tensor, reset: Reset = "zero",
                 detach_reset: bool = False, surrogate: Surrogate | None = None) -> tuple[Tensor, Tensor]:
    """Multi-step LIF over ``current [T, ...]``; returns ``(spikes, membranes)``, both ``[T, ...]``.

    Uses the fused kernel when ``decay`` and ``threshold`` are plain numbers and falls back
    to :func:`lif_sequence_reference` when either is a tensor that needs a gradient."""
    _check(reset)
    surrogate = surrogate or Rectangular()
    if isinstance(decay, Tensor) or isinstance(threshold, Tensor):
        return lif_sequence_reference(current, decay, threshold, reset, detach_reset, surrogate)
    return _LIFSequence.apply(current, float(decay), float(threshold), _RESET_CODE[reset], bool(detach_reset), surrogate)


class _LIFMaxPool(torch.autograd.Function):
    # The compiled LIF + 2x2 max-pool kernel (compendium.spiking.native.pool_forward): the
    # [T, ...] spikes and max_pool2d's indices are never stored; the backward pass recomputes
    # both from the saved membranes and gives what lif_sequence followed by max_pool2d gives.
    @staticmethod
    def forward(ctx, current: Tensor, decay: float, threshold: float, reset: int, detach_reset: bool,
                surrogate: Surrogate):
        ctx.set_materialize_grads(False)
        ctx.params = (decay, threshold, reset, detach_reset, surrogate)
        pooled, mems = native.pool_forward(current, decay, threshold, reset)
        ctx.save_for_backward(mems)
        return pooled

    @staticmethod
    def backward(ctx, grad_pooled: Tensor | None):
        (mems,) = ctx.saved_tensors
        if grad_pooled is None:
            return None, None, None, None, None, None
        decay, threshold, reset, detach_reset, surrogate = ctx.params
        return (native.pool_backward(mems, grad_pooled, decay, threshold, reset, detach_reset, surrogate),
                None, None, None, None, None)


def unhooked(*modules: nn.Module) -> bool:
    """No forward or backward hook on any of ``modules`` nor a global module hook: a fused
    kernel (:func:`lif_maxpool2d` in :class:`~compendium.spiking.nets.SpikingBody`, the graph
    layers' static rate) would skip the calls, and the intermediate tensors, such hooks observe."""
    from torch.nn.modules import module as m

    if m._global_forward_hooks or m._global_forward_pre_hooks or m._global_backward_hooks or \
            m._global_backward_pre_hooks:
        return False
    return not any(mod._forward_hooks or mod._forward_pre_hooks or mod._backward_hooks or mod._backward_pre_hooks
                   for mod in modules)


def lif_maxpool2d(current: Tensor, decay: float | Tensor, threshold: float | Tensor, reset: Reset = "zero",
                  detach_reset: bool = False, surrogate: Surrogate | None = None) -> Tensor:
    """A multi-step LIF layer over ``current [T, N, C, H, W]`` followed by 2×2 max pooling of
    stride 2: ``max_pool2d(o[t], 2)`` for every step, ``[T, N, C, H//2, W//2]``.

    Max pooling of binary spikes is an OR over each window, so the LIF and the pooling can run
    as one kernel that never stores the full-resolution spikes nor the pooling indices (the
    conv-SNN layers of the STBP papers, e.g. Deng et al. 2019 §IV). Where the compiled kernel
    takes the input (:func:`compendium.spiking.native.supports_pool`: float32 CPU,
    channels-last slices, even ``H`` and ``W``, plain-number ``decay`` and ``threshold``, the
    rectangular surrogate) the output, the gradient and the memory format are those of
    :func:`lif_sequence` followed by :func:`torch.nn.functional.max_pool2d`, bit for bit
    (max_pool2d routes a window's gradient to its first maximum in scan order, which the
    kernel recomputes from the membranes); otherwise it runs exactly that composition."""
    _check(reset)
    surrogate = surrogate or Rectangular()
    plain = not isinstance(decay, Tensor) and not isinstance(threshold, Tensor)
    if current.dim() != 5:
        raise ValueError(f"current must be [T, N, C, H, W], got shape {tuple(current.shape)}")
    if plain and native.supports_pool(current, surrogate):
        return _LIFMaxPool.apply(current, float(decay), float(threshold), _RESET_CODE[reset], bool(detach_reset),
                                 surrogate)
    spikes, _ = lif_sequence(current, decay, threshold, reset, detach_reset, surrogate)
    T, N = spikes.shape[:2]
    pooled = torch.nn.functional.max_pool2d(spikes.reshape(T * N, *spikes.shape[2:]), 2)
    return pooled.reshape(T, N, *pooled.shape[1:])


class _StaticLIFRate(torch.autograd.Function):
    # The rate of a LIF driven by one current at every step, optionally dropped out per step.
    # Native (compendium.spiking.native, lif.c) where it applies, else the same operations in the
    # same order with tensors: forward sums the steps t = 0 … T-1, backward sums the current's
    # gradient from t = T-1 down to 0, so both give the same numbers bit for bit.
    @staticmethod
    def forward(ctx, current: Tensor, T: int, decay: float, threshold: float, reset: int, detach_reset: bool,
                surrogate: Surrogate, bits: Tensor | None, thr: int, scale: float):
        ctx.params = (T, decay, threshold, reset, detach_reset, surrogate, thr, scale)
        ctx.native = native.supports_static_rate(current, T, surrogate, bits)
        ctx.save_for_backward(current, bits)
        if ctx.native:
            return native.static_rate_forward(current, T, decay, threshold, reset, bits, thr, scale)
        spikes, _ = _LIFSequence.apply(current.unsqueeze(0).expand(T, *current.shape), decay, threshold, reset,
                                       detach_reset, surrogate)
        keep = keep_factors(bits, thr, scale, current.dtype)
        acc = spikes[0] * keep[0] if keep is not None else spikes[0].clone()
        for t in range(1, T):
            acc = acc + (spikes[t] * keep[t] if keep is not None else spikes[t])
        return acc / T

    @staticmethod
    def backward(ctx, grad_rate: Tensor):
        current, bits = ctx.saved_tensors
        T, decay, threshold, reset, detach_reset, surrogate, thr, scale = ctx.params
        if ctx.native:
            grad = native.static_rate_backward(current, T, grad_rate, decay, threshold, reset, detach_reset,
                                               surrogate, bits, thr, scale)
            return grad, None, None, None, None, None, None, None, None, None
        keep = keep_factors(bits, thr, scale, current.dtype)
        gd = grad_rate / T
        g_spikes = gd.unsqueeze(0) * keep if keep is not None else gd.unsqueeze(0).expand(T, *gd.shape).contiguous()
        with torch.enable_grad():
            steps = current.detach().unsqueeze(0).expand(T, *current.shape).clone().requires_grad_()
            spikes, _ = _LIFSequence.apply(steps, decay, threshold, reset, detach_reset, surrogate)
            (d,) = torch.autograd.grad(spikes, steps, g_spikes)
        grad = d[T - 1].clone()
        for t in range(T - 2, -1, -1):
            grad = grad + d[t]
        return grad, None, None, None, None, None, None, None, None, None


def keep_factors(bits: Tensor | None, thr: int, scale: float, dtype: torch.dtype = torch.float32) -> Tensor | None:
    """A dropout mask from its random draws: ``scale`` where ``bits ≥ thr``, else 0, as ``dtype``
    (``None`` without bits). The comparison writes the float mask directly (no boolean tensor to
    convert); used by :func:`lif_static_rate`'s eager path and the graph chapter's dropout."""
    if bits is None:
        return None
    keep = torch.empty(bits.shape, dtype=dtype, device=bits.device)
    torch.ge(bits, thr, out=keep)
    return keep.mul_(scale)


def lif_static_rate(current: Tensor, T: int, decay: float, threshold: float, reset: Reset = "zero",
                    detach_reset: bool = False, surrogate: Surrogate | None = None, *, keep_bits: Tensor | None = None,
                    keep_threshold: int = 0, keep_scale: float = 1.0) -> Tensor:
    """The firing rate of LIF neurons driven by the same ``current`` at each of ``T`` steps, each
    step's spikes optionally dropped out: ``r = (1/T) Σ_t o[t] · m[t]`` with ``o`` from the LIF
    recurrence (module docstring) under ``I[t] = current`` and ``m[t] = keep_scale`` where
    ``keep_bits[t] ≥ keep_threshold``, else 0 (``m ≡ 1`` without ``keep_bits``).

    It is ``dropout(lif_sequence(current.expand(T, ...)), p).mean(0)`` — a spiking layer with
    static input and a rate readout, as in the spiking GCN (Xu et al., IJCAI 2021) — computed
    without any ``[T, ...]`` float array: the compiled kernel recomputes the ``T`` steps in the
    backward pass. The sums over the steps run in a fixed order (forward ``t = 0 … T-1``,
    backward ``t = T-1 … 0``), so the numbers may differ in the last bits from PyTorch's own
    reduction of the ``[T, ...]`` array, whose order depends on the tensor's size. ``decay`` and
    ``threshold`` are plain numbers; ``keep_bits`` is an int16 tensor ``[T, *current.shape]``."""
    _check(reset)
    surrogate = surrogate or Rectangular()
    if keep_bits is not None and tuple(keep_bits.shape) != (T, *current.shape):
        raise ValueError(f"keep_bits must have shape {(T, *current.shape)}, got {tuple(keep_bits.shape)}")
    return _StaticLIFRate.apply(current.contiguous(), int(T), float(decay), float(threshold), _RESET_CODE[reset],
                                bool(detach_reset), surrogate, keep_bits, int(keep_threshold), float(keep_scale))


class LIF(snntorch.Leaky):
    """snntorch's ``Leaky`` configured to the STBP equations, in one- or multi-step mode.

    ``LIF(decay=0.2, threshold=0.5)`` is the STBP neuron of the Tsinghua group's code
    (zero reset, rectangular surrogate of width 1, gradient through the reset).
    ``step_mode="single"`` keeps snntorch's call ``spk, mem = lif(x, mem)``;
    ``step_mode="multi"`` maps ``[T, B, ...]`` currents to ``[T, B, ...]`` spikes in one call
    (the fast path), and keeps the last membrane sequence in ``self.mem_seq`` when
    ``record_mem`` is set. With ``reset="zero"`` or ``"subtract"`` and ``detach_reset=True``
    it computes exactly what ``snntorch.Leaky(beta=decay, reset_mechanism=reset)`` computes.
    """

    def __init__(self, decay: float = 0.2, threshold: float = 0.5, *, reset: Reset = "zero", detach_reset: bool = False,
                 surrogate: Surrogate | None = None, step_mode: Literal["single", "multi"] = "multi",
                 learn_decay: bool = False, learn_threshold: bool = False, record_mem: bool = False):
        _check(reset)
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        if step_mode not in ("single", "multi"):
            raise ValueError(f"step_mode must be 'single' or 'multi', got {step_mode!r}")
        surrogate = surrogate or Rectangular()
        super().__init__(beta=decay, threshold=threshold, spike_grad=surrogate, learn_beta=learn_decay,
                         learn_threshold=learn_threshold, reset_mechanism="zero" if reset == "zero" else "subtract")
        self.reset = reset
        self.detach_reset = detach_reset
        self.surrogate = surrogate
        self.step_mode = step_mode
        self.record_mem = record_mem
        self.mem_seq: Tensor | None = None

    def _params(self) -> tuple[float | Tensor, float | Tensor]:
        decay = self.beta.clamp(0, 1) if self.beta.requires_grad else float(self.beta)
        threshold = self.threshold if self.threshold.requires_grad else float(self.threshold)
        return decay, threshold

    def extra_repr(self) -> str:
        decay, threshold = self._params()
        return (f"decay={float(decay):g}, threshold={float(threshold):g}, reset={self.reset}, "
                f"detach_reset={self.detach_reset}, surrogate={self.surrogate!r}, step_mode={self.step_mode}")

    def forward(self, input_: Tensor, mem: Tensor | None = None):
        decay, threshold = self._params()
        if self.step_mode == "multi":
            if mem is not None:
                raise ValueError("multi-step mode starts from rest; pass no membrane")
            spikes, mems = lif_sequence(input_, decay, threshold, self.reset, self.detach_reset, self.surrogate)
            self.mem_seq = mems if self.record_mem else None
            return spikes
        if mem is None:
            mem = self.mem if self.mem.shape == input_.shape else torch.zeros_like(input_)
        spk, new_mem = lif_step(input_, mem, decay, threshold, self.reset, self.detach_reset, self.surrogate)
        self.mem = new_mem
        return spk, new_mem
