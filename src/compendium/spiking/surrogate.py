"""Surrogate gradients for the Heaviside spike function.

The forward pass is always the spike ``H(x) = 1[x > 0]`` with ``x = u - V_th``; the
backward pass replaces the Dirac delta ``H'(x)`` by a smooth or box-shaped stand-in
``h(x)``. Each surrogate is an object with the derivative :meth:`Surrogate.grad` (used by
the fused neuron kernels) that is also callable as a snntorch ``spike_grad`` (it maps a
shifted membrane to spikes with the surrogate backward).

- :class:`Rectangular` — STBP (Wu et al. 2018, Eq. 13): ``h(x) = (1/a) 1[|x| < a/2]``;
  ``a = 1`` is the window of the group's code (``|u - V_th| < 0.5``, height 1).
- :class:`ArcTan` — ``h(x) = (α/2) / (1 + (π α x / 2)^2)`` (Fang et al. 2021; snntorch's default).
- :class:`Sigmoid` — ``h(x) = k σ(kx) (1 - σ(kx))`` (SuperSpike, Zenke & Ganguli 2018).
"""

from __future__ import annotations

import math

import torch


class _SpikeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, surrogate: "Surrogate") -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        # the comparison written straight into a float tensor: the same 0/1 values as
        # (x > 0).to(x.dtype) without the boolean tensor and its conversion pass (about 6x
        # faster at [100, 256], where the per-step neurons of the hybrid chapter spend it)
        return torch.gt(x, 0, out=torch.empty_like(x))

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad_out * ctx.surrogate.grad(x), None


class Surrogate:
    """Base class: ``grad(x)`` is ``h(x)``; calling it on ``x`` spikes with that backward."""

    name = "surrogate"

    def grad(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def grad_(self, x: torch.Tensor) -> torch.Tensor:
        """``h(x)`` written into ``x`` (used by the fused kernels to save memory passes)."""
        return x.copy_(self.grad(x))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _SpikeFunction.apply(x, self)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v:g}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Rectangular(Surrogate):
    """STBP's rectangular window of width ``a`` and height ``1/a``."""

    name = "rectangular"

    def __init__(self, width: float = 1.0):
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        self.width = float(width)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        # 1[|x| < a/2] written into |x| (float 0/1, no boolean pass), then / a: the values of
        # (x.abs() < a/2).to(x.dtype) / a
        window = x.detach().abs().lt_(self.width / 2)
        return window if self.width == 1.0 else window.div_(self.width)

    def grad_(self, x: torch.Tensor) -> torch.Tensor:
        torch.lt(x.abs_(), self.width / 2, out=x)
        return x.mul_(1.0 / self.width) if self.width != 1.0 else x


class ArcTan(Surrogate):
    """Derivative of ``(1/π) arctan(π α x / 2)``; ``α`` sets the sharpness (peak ``α/2``)."""

    name = "arctan"

    def __init__(self, alpha: float = 2.0):
        if alpha <= 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        self.alpha = float(alpha)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return (self.alpha / 2) / (1 + (math.pi / 2 * self.alpha * x) ** 2)

    def grad_(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul_(math.pi / 2 * self.alpha).square_().add_(1.0).reciprocal_().mul_(self.alpha / 2)


class Sigmoid(Surrogate):
    """Derivative of the logistic ``σ(kx)``; ``k`` is the slope (peak ``k/4``)."""

    name = "sigmoid"

    def __init__(self, slope: float = 25.0):
        if slope <= 0:
            raise ValueError(f"slope must be positive, got {slope}")
        self.slope = float(slope)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.slope * x)
        return self.slope * s * (1 - s)


_BY_NAME = {"rectangular": Rectangular, "arctan": ArcTan, "sigmoid": Sigmoid}


def get(name: str, param: float | None = None) -> Surrogate:
    """A surrogate by name (``rectangular``, ``arctan``, ``sigmoid``) with its one parameter."""
    try:
        cls = _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown surrogate {name!r}; choose one of {sorted(_BY_NAME)}") from None
    return cls() if param is None else cls(param)
