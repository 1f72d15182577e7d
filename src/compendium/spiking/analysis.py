"""Small numerical experiments on the neuron itself (used by the primer and the tests)."""

from __future__ import annotations

import snntorch
import torch

from compendium.spiking.neuron import LIF, lif_sequence, lif_sequence_reference
from compendium.spiking.surrogate import Rectangular, Surrogate


def max_differences(T: int = 16, n: int = 256, decay: float = 0.5, threshold: float = 0.5, reset: str = "zero",
                    detach_reset: bool = False, surrogate: Surrogate | None = None, seed: int = 0) -> dict[str, float]:
    """Largest absolute differences, on random currents, between the fused LIF and the
    plain-autograd reference (spikes, membranes, input gradients)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, n, generator=g) * threshold
    w = torch.randn(T, n, generator=g)
    surrogate = surrogate or Rectangular()
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    s1, m1 = lif_sequence(a, decay, threshold, reset, detach_reset, surrogate)
    s2, m2 = lif_sequence_reference(b, decay, threshold, reset, detach_reset, surrogate)
    (s1 * w).sum().backward()
    (s2 * w).sum().backward()
    return {"spikes": float((s1 - s2).detach().abs().max()), "membrane": float((m1 - m2).detach().abs().max()),
            "gradient": float((a.grad - b.grad).abs().max())}


def snntorch_differences(T: int = 16, n: int = 256, decay: float = 0.5, threshold: float = 0.5, reset: str = "zero",
                         seed: int = 0) -> dict[str, float]:
    """Our multi-step LIF (gradient detached through the reset, as snntorch does) against
    ``snntorch.Leaky`` stepped in a Python loop, same surrogate: spikes, membranes, gradients."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, n, generator=g) * threshold
    w = torch.randn(T, n, generator=g)
    sg = Rectangular()
    ours = LIF(decay, threshold, reset=reset, detach_reset=True, surrogate=sg, step_mode="multi", record_mem=True)
    ref = snntorch.Leaky(beta=decay, threshold=threshold, spike_grad=sg, reset_mechanism=reset)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    s1 = ours(a)
    mem = ref.reset_mem()
    spk2, mem2 = [], []
    for t in range(T):
        s, mem = ref(b[t], mem)
        spk2.append(s)
        mem2.append(mem)
    s2, m2 = torch.stack(spk2), torch.stack(mem2)
    (s1 * w).sum().backward()
    (s2 * w).sum().backward()
    return {"spikes": float((s1 - s2).detach().abs().max()), "membrane": float((ours.mem_seq - m2).detach().abs().max()),
            "gradient": float((a.grad - b.grad).abs().max())}


def gradient_through_time(decay: float, T: int = 20, n: int = 2000, threshold: float = 0.5,
                          drive: float = 0.3, seed: int = 0) -> torch.Tensor:
    """Mean ``|∂L/∂I[t]|`` for a loss on the spike count of the *last* step only: how far back
    in time BPTT carries credit, as a function of the decay ``k``."""
    g = torch.Generator().manual_seed(seed)
    x = (drive + 0.3 * torch.randn(T, n, generator=g)).requires_grad_()
    spikes, _ = lif_sequence(x, decay, threshold, "zero", False, Rectangular())
    spikes[-1].sum().backward()
    return x.grad.abs().mean(1)
