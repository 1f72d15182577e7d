"""Time one training step of the same small conv SNN three ways, in one process, and print ratios.

1. ours      — ``compendium.spiking``: stateless layers folded over time (one call on
               ``[T·B, ...]``) and the fused multi-step LIF kernel;
2. snntorch  — ``snntorch.Leaky`` (same equations, same surrogate) stepped in a Python loop
               over ``T``, each layer called once per step, as snntorch's tutorials do;
3. T x ANN   — the same network with ReLU run ``T`` times on the same inputs (the cost floor:
               the synaptic layers' work without any neuron dynamics).

Each step is forward + backward + Adam update on a fixed batch; the median of ``--repeats``
steps after warm-up is reported. Usage: ``python bench/step_time.py [--T 4 --batch 32 --threads 2]``.

Allocation matters on a CPU: glibc hands blocks above its mmap threshold back to the OS when
freed, so every step would page-fault its large buffers in again; ``import compendium`` raises
that threshold for the process (:mod:`compendium.runtime`; ``COMPENDIUM_MALLOC=0`` keeps glibc's
defaults), for the three variants alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import snntorch
import torch
from torch import nn

from compendium.spiking import Rectangular, rate
from compendium.spiking.nets import ANNClassifier, SpikingClassifier, conv_stages


class SnntorchLoop(nn.Module):
    """The same stages, snntorch-style: one Leaky per stage, a Python loop over time steps."""

    def __init__(self, stages, decay=0.5, threshold=0.5):
        super().__init__()
        self.stages = nn.ModuleList(nn.Sequential(*s) for s in stages)
        self.neurons = nn.ModuleList(snntorch.Leaky(beta=decay, threshold=threshold, spike_grad=Rectangular(),
                                                    reset_mechanism="zero") for _ in stages[:-1])

    def forward(self, spikes):  # [T, B, ...]
        mems = [n.reset_mem() for n in self.neurons]
        out = 0
        for t in range(spikes.shape[0]):
            x = spikes[t]
            for i, stage in enumerate(self.stages):
                x = stage(x)
                if i < len(self.neurons):
                    x, mems[i] = self.neurons[i](x, mems[i])
            out = out + x
        return out / spikes.shape[0]


class ANNTimes(nn.Module):
    def __init__(self, stages):
        super().__init__()
        self.ann = ANNClassifier(stages)

    def forward(self, spikes):
        return sum(self.ann(spikes[t]) for t in range(spikes.shape[0])) / spikes.shape[0]


class OursOnSpikes(nn.Module):
    def __init__(self, stages, T):
        super().__init__()
        self.net = SpikingClassifier(stages, T, lif={"decay": 0.5, "threshold": 0.5, "detach_reset": True})

    def forward(self, spikes):
        return self.net.readout(self.net.body(spikes))


def time_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int, warmup: int = 3) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for i in range(warmup + repeats):
        t0 = time.perf_counter()
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--T", type=int, default=4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--channels", type=int, nargs="+", default=[16, 32])
    p.add_argument("--hidden", type=int, default=128)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x = rate(torch.rand(a.batch, 1, 28, 28), a.T)
    y = torch.randint(0, 10, (a.batch,))

    def stages():
        torch.manual_seed(0)  # identical initial weights in all three
        return conv_stages(1, tuple(a.channels), a.hidden, 10, 28)

    models = {"ours": OursOnSpikes(stages(), a.T), "snntorch loop": SnntorchLoop(stages()), "T x ANN": ANNTimes(stages())}
    with torch.no_grad():  # same equations: ours and snntorch's loop must give the same logits
        diff = (models["ours"](x) - models["snntorch loop"](x)).abs().max().item()
    # interleave the measurements so that machine noise hits all three alike
    results = {k: [] for k in models}
    for _ in range(3):
        for name, m in models.items():
            results[name].append(time_steps(m, x, y, a.repeats // 3 or 1))
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"conv SNN {a.channels}, hidden {a.hidden}, T={a.T}, batch {a.batch}, {a.threads} threads, "
          f"torch {torch.__version__}, snntorch {snntorch.__version__}")
    print(f"max |logit difference| ours vs snntorch loop: {diff:.2e}")
    for name, t in med.items():
        print(f"  {name:14s} {1000 * t:8.2f} ms/step   ratio to T x ANN: {t / med['T x ANN']:.3f}")
    print(f"ours / snntorch loop: {med['ours'] / med['snntorch loop']:.3f}")


if __name__ == "__main__":
    main()
