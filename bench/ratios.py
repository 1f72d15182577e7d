"""SNN training step against T × ANN, at the bench configuration and at each SNN chapter's default
configuration, with the ratio's spread; printed against the targets of the speed issue.

For every configuration the spiking net and its ANN twin (the same layers with every LIF
replaced by a ReLU, run once per time step, i.e. ``T`` separate ANN passes: the cost floor of
the synaptic work without any neuron dynamics) are timed in one process, **interleaved**:
each round times a few steps of the SNN, then of the ANN twin, and gives one ratio; the
report is the median ratio over the rounds and its spread (the interquartile range, and the
min–max). Each step is forward + backward + Adam update on a fixed batch.

Usage: ``python bench/ratios.py [--rounds 9 --steps 3 --threads 2 --only resnet32]``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from compendium.spiking.neuron import LIF
from compendium.spiking.nets import conv_stages, mlp_stages, SpikingClassifier
from compendium.spiking.studies import resnet_builder

TARGET = 0.9  # SNN step ≤ 0.9 × T × ANN


class _ReLUTwin(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x)


def ann_twin(snn: nn.Module) -> nn.Module:
    """A copy of ``snn`` with every LIF replaced by a ReLU (the same synaptic layers)."""
    twin = copy.deepcopy(snn)
    for name, module in list(twin.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LIF):
                setattr(module, child_name, _ReLUTwin())
    return twin


class TimesT(nn.Module):
    """Run a one-step model ``T`` times (one ANN pass per time step) and average."""

    def __init__(self, model: nn.Module, T: int, call: Callable[[nn.Module, Tensor], Tensor]):
        super().__init__()
        self.model, self.T, self.call = model, T, call

    def forward(self, x: Tensor) -> Tensor:
        return sum(self.call(self.model, x) for _ in range(self.T)) / self.T


@dataclass
class Config:
    name: str
    build: Callable[[], tuple[nn.Module, nn.Module, Tensor, Tensor]] | None  # (snn, T × ANN, x, y)
    target: float = TARGET
    what: str = "SNN step / (T × ANN step)"
    measure: Callable[[int, int], dict[str, float]] | None = None  # (rounds, steps) -> result; default: measure()


def _steps(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / n


def measure(cfg: Config, rounds: int, steps: int) -> dict[str, float]:
    snn, ann, x, y = cfg.build()
    opts = {m: torch.optim.Adam(m.parameters(), lr=1e-4) for m in (snn, ann)}
    for m in (snn, ann):  # warm-up (allocator, oneDNN primitive caches)
        _steps(m, opts[m], x, y, 2)
    t_snn, t_ann = [], []
    for _ in range(rounds):
        t_snn.append(_steps(snn, opts[snn], x, y, steps))
        t_ann.append(_steps(ann, opts[ann], x, y, steps))
    return _summary(t_snn, t_ann)


def _summary(t_a: list[float], t_b: list[float]) -> dict[str, float]:
    ratios = [a / b for a, b in zip(t_a, t_b)]
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return {"snn_ms": 1000 * statistics.median(t_a), "ann_ms": 1000 * statistics.median(t_b),
            "ratio": statistics.median(ratios), "q1": q[0], "q3": q[2], "min": min(ratios), "max": max(ratios)}


def graph_epochs(dataset: str = "cora", snn: str = "gc-snn+stfn") -> Callable[[int, int], dict[str, float]]:
    """GC-SNN against the same-code GCN per training epoch, as the stfn chapter trains them
    (its default profile: T=8, hidden 64, dropout 0.1 for the GC-SNN; Kipf & Welling's 16
    hidden units and dropout 0.5 for the GCN; Adam 0.01, weight decay 5e-4; full batch; every
    epoch also evaluates validation and test): each round runs ``fit`` for ``4 × steps``
    epochs of one, then of the other."""
    def run(rounds: int, steps: int) -> dict[str, float]:
        from compendium.graph.experiment import FullBatch, build_classifier
        from compendium.learning import fit
        from compendium.datasets import load_planetoid

        data, _ = load_planetoid(dataset)
        split = {k: FullBatch(i := torch.nonzero(getattr(data, f"{k}_mask")).squeeze(1), data.y[i])
                 for k in ("train", "val", "test")}
        hp = {"gcn": dict(hidden=16, dropout=0.5), snn: dict(hidden=64, dropout=0.1)}
        clfs = {m: build_classifier(data, m, 0, T=8, decay=0.5, threshold=1.0, **hp[m])[0] for m in (snn, "gcn")}
        epochs = 4 * steps

        def epoch_time(m: str, n: int) -> float:
            t0 = time.perf_counter()
            fit(clfs[m], split["train"], val=split["val"], test=split["test"], epochs=n, lr=0.01, weight_decay=5e-4,
                batch_size=None, eval_batch_size=None, seed=0, decay_filter=lambda name, p: ".norm." not in name,
                show_progress=False)
            return (time.perf_counter() - t0) / n

        for m in clfs:  # warm-up
            epoch_time(m, 3)
        t_snn, t_ann = [], []
        for _ in range(rounds):
            t_snn.append(epoch_time(snn, epochs))
            t_ann.append(epoch_time("gcn", epochs))
        return _summary(t_snn, t_ann)
    return run


def configs() -> list[Config]:
    lif = {"decay": 0.5, "threshold": 0.5}

    def conv(channels, hidden, T, batch):
        def build():
            torch.manual_seed(0)
            snn = SpikingClassifier(conv_stages(1, channels, hidden, 10, 28), T, encoding="direct", lif=lif)
            ann = TimesT(ann_twin(snn), T, lambda m, x: m.readout(m.body(x.unsqueeze(0))))
            return snn, ann, torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
        return build

    def mlp(sizes, T, batch):
        def build():
            torch.manual_seed(0)
            snn = SpikingClassifier(mlp_stages(sizes), T, encoding="direct", lif=lif)
            ann = TimesT(ann_twin(snn), T, lambda m, x: m.readout(m.body(x.unsqueeze(0))))
            return snn, ann, torch.rand(batch, sizes[0]), torch.randint(0, sizes[-1], (batch,))
        return build

    def resnet(depth, block, T, batch, size=14):
        def build():
            torch.manual_seed(0)
            snn = resnet_builder(depth, 8, T=T, in_channels=1, lif={"decay": 0.25, "threshold": 0.5}, block=block)()
            one = copy.deepcopy(snn)
            one.T = 1
            ann = TimesT(ann_twin(one), T, lambda m, x: m(x))
            return snn, ann, torch.rand(batch, 1, size, size), torch.randint(0, 10, (batch,))
        return build

    def compression(batch):
        def build():
            from compendium.compression.experiment import Setup, make_model

            snn = make_model(Setup())  # the chapter's net: rate-coded input, channels-last, fused LIF
            ann = TimesT(ann_twin(snn), snn.T, lambda m, x: m.readout(m.body(x.unsqueeze(0))))
            torch.manual_seed(0)
            return snn, ann, torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
        return build

    return [
        Config("bench conv [16, 32], hidden 128, T=4, batch 32, direct input", conv((16, 32), 128, 4, 32)),
        Config("compression conv [16, 32], hidden 128, T=4, batch 64, rate input, channels-last (its default)",
               compression(64)),
        Config("adversarial MLP 784-400-10, T=8, batch 64", mlp((784, 400, 10), 8, 64)),
        Config("hybrid MLP 784-512-10, T=8, batch 64", mlp((784, 512, 10), 8, 64)),
        Config("tdbn ResNet-32 (tdBN), 14x14, T=4, batch 64", resnet(32, "standard", 4, 64)),
        Config("msresnet MS-ResNet-44, 14x14, T=4, batch 64", resnet(44, "ms", 4, 64)),
        Config("stfn GC-SNN+STFN (T=8, hidden 64) vs GCN on Cora, per training epoch", None, target=2.0,
               what="GC-SNN epoch / GCN epoch", measure=graph_epochs("cora", "gc-snn+stfn")),
        Config("stfn GC-SNN (T=8, hidden 64) vs GCN on Cora, per training epoch", None, target=2.0,
               what="GC-SNN epoch / GCN epoch", measure=graph_epochs("cora", "gc-snn")),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", default="", help="run only configurations whose name contains this text")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from compendium import runtime
    from compendium.spiking import native

    print(f"Median ratio over {a.rounds} interleaved rounds of {a.steps} steps (graph: {4 * a.steps} epochs); "
          f"{a.threads} threads, torch {torch.__version__}; allocator {runtime.applied or 'glibc defaults'}; "
          f"LIF kernel {'native' if native.library() is not None else 'eager'}")
    for cfg in configs():
        if a.only and a.only not in cfg.name:
            continue
        try:
            r = cfg.measure(a.rounds, a.steps) if cfg.measure else measure(cfg, a.rounds, a.steps)
        except Exception as e:  # e.g. a dataset that does not resolve here
            print(f"  {cfg.name}\n    not measured: {type(e).__name__}: {e}")
            continue
        flag = "meets" if r["ratio"] <= cfg.target else "MISSES"
        print(f"  {cfg.name}\n    {r['snn_ms']:.1f} ms vs {r['ann_ms']:.1f} ms: {cfg.what} = {r['ratio']:.3f} "
              f"(IQR {r['q1']:.3f}–{r['q3']:.3f}, range {r['min']:.3f}–{r['max']:.3f}) — {flag} the target "
              f"≤ {cfg.target:g}")


if __name__ == "__main__":
    main()
