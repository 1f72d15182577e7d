"""The compiled LIF kernel built with the project's options against the same source built
without ``-fno-trapping-math`` (the build before it), in one process: the multi-step LIF
backward alone at a ResNet block's shape, and whole training steps of the tdbn and msresnet
chapters' default nets (``bench/ratios.py``'s configurations).

Under GCC's default ``-ftrapping-math`` the per-element selects of the backward loop (the
surrogate window, the spike, the gradient paths) stay branches, and on a CPU without AVX-512
masks the loop is scalar; the option lets them vectorise as blends with the same values. Both
builds are checked to give the same gradients bit for bit before anything is timed. Each round
times a few calls with each build (interleaved); the report is the median ratio new / old with
its interquartile range. Usage: ``python bench/lif_kernel.py [--rounds 11 --steps 3 --threads 2]``.
"""

from __future__ import annotations

import argparse
import time

import torch

from compendium.spiking import Rectangular, native
from ratios import _steps, _summary, configs

BEFORE = [f for f in native._FLAGS if f != "-fno-trapping-math"]


def _use(lib) -> None:
    native._lib, native._tried = lib, True


def _report(what: str, t_new: list[float], t_old: list[float]) -> None:
    r = _summary(t_new, t_old)
    print(f"  {what}\n    {r['snn_ms']:.2f} ms vs {r['ann_ms']:.2f} ms before: new / old {r['ratio']:.3f} "
          f"(IQR {r['q1']:.3f}–{r['q3']:.3f}, {len(t_new)} rounds)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.rounds < 2:
        p.error("--rounds must be at least 2 (the report gives the ratio's interquartile range)")
    new = native.library()
    if new is None:
        print("no compiled kernel on this machine (no C compiler, or COMPENDIUM_NATIVE=0): nothing to compare")
        return
    old = native._build(BEFORE)
    if old is None:
        print(f"the kernel without -fno-trapping-math did not build ({' '.join(BEFORE)}): nothing to compare")
        return
    try:
        _compare(new, old, a)
    finally:
        _use(new)


def _compare(new, old, a: argparse.Namespace) -> None:
    print(f"LIF kernel, {a.threads} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}: "
          f"{' '.join(native._FLAGS)} against the same without -fno-trapping-math")

    # the backward alone: tdbn's ResNet-32 first stage at the chapter's default (batch 64, 8
    # channels, 14x14, T=4), hard reset, rectangular surrogate, gradient of the spikes only
    g = torch.Generator().manual_seed(0)
    current = torch.randn(4, 64, 8, 14, 14, generator=g) * 0.6 + 0.3
    grad_spikes = torch.randn(current.shape, generator=g)
    sg = Rectangular(1.0)

    def backward(lib, n: int) -> tuple[float, torch.Tensor]:
        _use(lib)
        assert native.supports(current)
        _, mems = native.forward(current, 0.25, 0.5, 0)
        t0 = time.perf_counter()
        for _ in range(n):
            out = native.backward(mems, grad_spikes, None, 0.25, 0.5, 0, False, sg)
        return (time.perf_counter() - t0) / n, out

    assert torch.equal(backward(new, 1)[1], backward(old, 1)[1]), "the two builds must agree bit for bit"
    t_new, t_old = [], []
    for _ in range(a.rounds):
        t_new.append(backward(new, 10 * a.steps)[0])
        t_old.append(backward(old, 10 * a.steps)[0])
    _report("multi-step LIF backward, [4, 64, 8, 14, 14], hard reset, rectangular surrogate", t_new, t_old)

    for cfg in configs():
        if not cfg.name.startswith(("tdbn", "msresnet")):
            continue
        grads, real, calls = [], native.backward, []
        native.backward = lambda *args: (calls.append(1), real(*args))[1]
        try:
            for lib in (new, old):  # one step from the same initial net: the same gradients bit for bit
                _use(lib)
                snn, _, x, y = cfg.build()
                torch.nn.functional.cross_entropy(snn(x), y).backward()
                grads.append([q.grad for q in snn.parameters()])
        finally:
            native.backward = real
        assert calls, f"{cfg.name}: the net does not run the compiled LIF backward"
        assert all(torch.equal(u, v) for u, v in zip(*grads)), f"{cfg.name}: the two builds must agree bit for bit"
        snn, _, x, y = cfg.build()
        opt = torch.optim.Adam(snn.parameters(), lr=1e-4)
        for lib in (new, old):  # warm-up
            _use(lib)
            _steps(snn, opt, x, y, 1)
        t_new, t_old = [], []
        for _ in range(a.rounds):
            _use(new)
            t_new.append(_steps(snn, opt, x, y, a.steps))
            _use(old)
            t_old.append(_steps(snn, opt, x, y, a.steps))
        _report(f"{cfg.name}: training step", t_new, t_old)


if __name__ == "__main__":
    main()
