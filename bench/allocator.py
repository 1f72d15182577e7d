"""Does raising glibc's mmap/trim thresholds (:mod:`compendium.runtime`, applied on ``import
compendium``) pay at the chapter level? Times chapter workloads through the chapters' own code
in fresh processes, alternately with the setting (the default) and without it
(``COMPENDIUM_MALLOC=0``), and prints the median wall time of each and their ratio.

Workloads: the compression chapter's pretraining (its default net and setup, 2 epochs on 3000
MNIST training images, evaluation on 2000) and the stfn chapter's GC-SNN+STFN on Cora (its
default setting, 100 epochs). Usage: ``python bench/allocator.py [--repeats 3 --threads 2]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

WORKLOADS = {
    "compression pretrain (2 epochs, 3000 MNIST images)": """
from compendium.datasets import load_mnist
from compendium.compression import experiment as X
train, test, _ = load_mnist(3000, 2000, split="auto", seed=0)
X.pretrain(train, test, X.Setup(pretrain_epochs=2))
""",
    "stfn GC-SNN+STFN on Cora (100 epochs)": """
from compendium.datasets import load_planetoid
from compendium.graph.experiment import run_node_classification
data, _ = load_planetoid("cora")
run_node_classification(data, "cora", "gc-snn+stfn", 0, epochs=100, T=8, hidden=64, lr=0.01, weight_decay=5e-4,
                        dropout=0.1, decay=0.5, threshold=1.0)
""",
}


def run(code: str, threads: int, allocator: bool) -> float:
    env = {**os.environ, "COMPENDIUM_MALLOC": "1" if allocator else "0"}
    for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        env.pop(k, None)
    prog = (f"import time, torch\ntorch.set_num_threads({threads})\n"
            "import compendium\n" + "t0 = time.perf_counter()\n" + code + "\nprint(time.perf_counter() - t0)\n")
    out = subprocess.run([sys.executable, "-c", prog], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", default="")
    a = p.parse_args()
    print(f"Allocator setting at the chapter level: median wall time over {a.repeats} alternating runs, "
          f"{a.threads} threads")
    for name, code in WORKLOADS.items():
        if a.only and a.only not in name:
            continue
        on, off = [], []
        try:
            for _ in range(a.repeats):
                off.append(run(code, a.threads, False))
                on.append(run(code, a.threads, True))
        except subprocess.CalledProcessError as e:
            print(f"  {name}: not measured ({(e.stderr or '').strip().splitlines()[-1:]})")
            continue
        m_on, m_off = statistics.median(on), statistics.median(off)
        print(f"  {name}: glibc defaults {m_off:.2f} s (range {min(off):.2f}–{max(off):.2f}), raised thresholds "
              f"{m_on:.2f} s (range {min(on):.2f}–{max(on):.2f}): {m_on / m_off:.3f} ×")


if __name__ == "__main__":
    main()
