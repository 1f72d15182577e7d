"""The hybrid synapse's compiled trace step against the eager tensor operations, in one HP
training step of the hybrid chapter's MNIST MLP (784-256-10, T=5, batch 100) whose Hebbian
trace has reached the clip, so that every step runs the general loop of
:class:`compendium.plasticity.hybrid.PlasticLIF` (the Gram-matrix path cannot be taken).

Both variants compute the same numbers bit for bit (``tests/test_plasticity.py``); they are
timed in one process over interleaved rounds, each round a few steps of each, and the report is
the median ratio fused / eager with its interquartile range. Usage:
``python bench/trace_update.py [--rounds 15 --steps 10 --threads 2]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from compendium.plasticity.hybrid import HybridMLP
from compendium.spiking import native


def saturated_hp(seed: int = 0) -> HybridMLP:
    """An HP MLP whose trace sits at the clip in some synapses (as after training in the chapter)."""
    torch.manual_seed(seed)
    model = HybridMLP((784, 256, 10), "hp", T=5, decay=0.4, threshold=0.4, trace_decay=0.99)
    with torch.no_grad():
        model.hidden.beta.fill_(0.1)  # the meta-learned rates reach about 0.1 in the chapter
        model.hidden.trace.uniform_(-4.0, 4.0)
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if native.library() is None:
        print("no compiled kernel on this machine (no C compiler, or COMPENDIUM_NATIVE=0): nothing to compare")
        return
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(100, 1, 28, 28, generator=g), torch.randint(0, 10, (100,), generator=g)
    model = saturated_hp()
    assert not model.hidden._clip_cannot_bind(model.flatten(x), 5), "the bench must run the general loop"
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    fused_check = native.supports_trace_update

    def steps(fused: bool) -> float:
        native.supports_trace_update = fused_check if fused else (lambda *t: False)
        try:
            t0 = time.perf_counter()
            for _ in range(a.steps):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
            return (time.perf_counter() - t0) / a.steps
        finally:
            native.supports_trace_update = fused_check

    steps(True), steps(False)  # warm-up
    ratios, fused_ms, eager_ms = [], [], []
    for _ in range(a.rounds):
        f, e = steps(True), steps(False)
        ratios.append(f / e)
        fused_ms.append(1e3 * f)
        eager_ms.append(1e3 * e)
    q = statistics.quantiles(ratios, n=4)
    print(f"hybrid HP step, trace at the clip ({a.threads} threads): fused trace step "
          f"{statistics.median(fused_ms):.2f} ms, eager {statistics.median(eager_ms):.2f} ms; "
          f"fused / eager {statistics.median(ratios):.3f} (IQR {q[0]:.3f}–{q[2]:.3f}, {a.rounds} rounds)")


if __name__ == "__main__":
    main()
