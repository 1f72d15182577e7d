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
fixed. The per-step loop is needed because the trace at ``t`` depends on ``t-1``. The
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

from compendium.spiking.layers import Encoder
from compendium.spiking.neuron import lif_step
from compendium.spiking.surrogate import Rectangular

MODES = ("gp", "lp", "hp")


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
        drive = self.linear(x.reshape(T * B, -1)).reshape(T, B, -1)  # the W part, all steps at once
        if extra is not None:
            drive = drive + extra
        u = torch.zeros_like(drive[0])
        if self.per_sample:
            trace = x.new_zeros(B, *self.trace.shape)
        else:
            trace = self.trace if self.persistent else torch.zeros_like(self.trace)
        spikes = []
        for t in range(T):
            current = drive[t]
            if self.plastic:
                local = torch.bmm(x[t].unsqueeze(1), trace).squeeze(1) if self.per_sample else x[t] @ trace
                current = current + self.alpha * local
            o, u = lif_step(current, u, self.decay, self.threshold, reset="subtract_decayed", surrogate=self.surrogate)
            if self.plastic:
                post = torch.tanh(u / self.threshold - self.eta)
                if self.per_sample:
                    hebb = (x[t] * self.beta).unsqueeze(2) * post.unsqueeze(1)
                else:
                    # one matmul instead of the official bmm(...).mean(0) (identical values, 18x faster)
                    hebb = (x[t] * self.beta).transpose(0, 1) @ post / B
                trace = torch.clamp(self.trace_decay * trace + hebb, -self.clip, self.clip)
            spikes.append(o)
        if self.plastic and self.persistent:
            self.trace.copy_(trace.detach())
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
