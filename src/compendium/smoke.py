"""Smoke mode: run a chapter's code paths end to end with one or two steps per loop.

``compendium run <chapter> --profile paper --smoke`` sets :data:`SMOKE_ENV` for the kernel.
The package honours it here and only here, so that a paper profile (ResNet-19, MS-ResNet-104,
CIFAR-10 shapes, every chapter's loops) can be proven to *start and finish* on a CPU in
seconds, without touching the notebooks:

- :func:`compendium.learning.fit` trains one epoch of at most :data:`STEPS` steps, at a batch
  of at most :data:`BATCH`, and records each step's time (:func:`record`);
- :func:`compendium.learning.compare_tuned` keeps the first :data:`REPLICATES` learning-rate
  trials (:func:`take`; every seed still runs, since chapters index the runs by seed), and
  counted loops (attack iterations, replicates, random draws, episodes, sequences) shrink
  through :func:`limit`;
- the dataset loaders keep :data:`N_TRAIN` / :data:`N_TEST` samples (:func:`shrink`) and,
  where the real data is absent, return synthetic samples of the real shapes
  (:func:`synthetic_images`) and say so (:func:`note`).

Nothing of a smoke run is published: the runner writes the executed notebook to
``_build/smoke/<chapter>.ipynb`` and the step timings to ``results/smoke/<chapter>.json``.
Outside smoke mode every helper here is the identity.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Iterable, Sequence, TypeVar

SMOKE_ENV = "COMPENDIUM_SMOKE"          # "1": smoke mode is on
SMOKE_LOG_ENV = "COMPENDIUM_SMOKE_LOG"  # JSON-lines file the kernel appends step timings to

STEPS = 2        # steps per loop (training steps per epoch, episodes, iterations, ...)
EPOCHS = 1       # epochs per training run
REPLICATES = 2   # learning-rate trials (and replicates) kept
DRAWS = 8        # random draws of a robustness / sensitivity search
BATCH = 2        # training batch (at the paper's input shape)
N_TRAIN = 16     # training samples a loader returns
N_TEST = 8       # test samples a loader returns

T = TypeVar("T")
_noted: set[str] = set()
_data_scale: list[float] = [1.0]  # full / smoke training-set size of the data loaded last
_unscaled: set[str] = set()      # data cut in smoke mode without a known full size (no cost estimate)


def active() -> bool:
    """Whether smoke mode is on (``$COMPENDIUM_SMOKE`` set to anything but ``0``/``false``/empty)."""
    return os.environ.get(SMOKE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def limit(n: int, smoke_n: int = STEPS) -> int:
    """``n`` outside smoke mode; ``min(n, smoke_n)`` in it (a counted loop: episodes, iterations, draws)."""
    return min(int(n), smoke_n) if active() else n


def take(items: Sequence[T] | Iterable[T], k: int = REPLICATES) -> list[T] | Any:
    """``items`` unchanged outside smoke mode; its first ``k`` items (a list) in it (seeds, trials)."""
    if not active():
        return items
    out = []
    for i, item in enumerate(items):
        if i >= k:
            break
        out.append(item)
    return out


def batch(*tensors: Any) -> Any:
    """The tensors unchanged outside smoke mode; their first :data:`BATCH` rows in it (a probe's batch).
    One tensor in, one out; several in, a tuple out."""
    out = tuple(t[:BATCH] for t in tensors) if active() else tensors
    return out[0] if len(out) == 1 else out


def note(message: str) -> None:
    """Say once per kernel, on stdout, what smoke mode changed (``[smoke] ...``); no-op outside it."""
    if active() and message not in _noted:
        _noted.add(message)
        print(f"[smoke] {message}", flush=True)


def shrink(name: str, n_full_train: int, n_full_test: int) -> tuple[int, int]:
    """Sample counts a loader keeps: ``(N_TRAIN, N_TEST)`` capped by the full sizes in smoke mode
    (and remembered, so that :func:`record` can scale a training run to the full data), else
    the full sizes."""
    if not active():
        return n_full_train, n_full_test
    n_tr, n_te = min(N_TRAIN, n_full_train), min(N_TEST, n_full_test)
    _data_scale[0] = n_full_train / max(1, n_tr)
    note(f"{name}: {n_tr} training / {n_te} test samples kept of {n_full_train:,} / {n_full_test:,}")
    return n_tr, n_te


def unscaled(what: str) -> None:
    """Mark that smoke mode cut generated data (``what``) whose full size it cannot tell the
    training loop: the cost table then gives no estimate for the chapter."""
    if active():
        _unscaled.add(what)


def data_scale() -> float:
    """How many times larger the training set of the data loaded last is than what smoke mode kept."""
    return _data_scale[0] if active() else 1.0


def synthetic_images(name: str, n_train: int, n_test: int, shape: Sequence[int], classes: int, *,
                     n_full_train: int, n_full_test: int, seed: int = 0, why: str = ""):
    """Synthetic ``(train, test)`` of the real shapes for absent data in smoke mode: images
    ``float32 [n, *shape]`` uniform in [0, 1), labels ``int64`` cycling through ``classes``
    (so every class occurs). Announces itself (:func:`note`)."""
    import torch

    n_tr, n_te = shrink(name, n_full_train, n_full_test)
    n_tr, n_te = min(n_tr, n_train or n_tr), min(n_te, n_test or n_te)
    g = torch.Generator().manual_seed(seed)
    note(f"{name} is absent{f' ({why})' if why else ''}: using {n_tr} + {n_te} SYNTHETIC samples of its real shape "
         f"{tuple(shape)} ({classes} classes); the numbers of this run mean nothing")

    def part(n: int, offset: int):
        return (torch.rand((n, *shape), generator=g), (torch.arange(n) + offset) % classes)

    return part(n_tr, 0), part(n_te, 0)


def record(kind: str, desc: str, step_times: list[float], *, batch: int, paper_batch: int, epochs: int,
           samples: int, **extra: Any) -> None:
    """Append one loop's measured step times to the smoke log (``$COMPENDIUM_SMOKE_LOG``).

    ``batch`` is the batch that ran, ``paper_batch`` the one the caller asked for, ``epochs``
    the epochs asked for and ``samples`` the training samples seen; the planned number of
    steps of the full run is ``epochs * ceil(samples * data_scale() / paper_batch)``."""
    if not active():
        return
    full = samples * data_scale()
    entry = {"kind": kind, "desc": desc, "step_times_s": [round(t, 6) for t in step_times], "batch": batch,
             "paper_batch": paper_batch, "epochs": epochs, "samples": samples, "samples_full": round(full),
             "planned_steps": int(epochs * math.ceil(full / max(1, paper_batch))),
             "data_cut_without_scale": sorted(_unscaled), **extra}
    path = os.environ.get(SMOKE_LOG_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
    if step_times:
        print(f"[smoke] {desc}: {len(step_times)} step(s) at batch {batch}, "
              f"{', '.join(f'{t * 1000:.0f} ms' for t in step_times)}", file=sys.stdout, flush=True)


class Timer:
    """Wall-clock seconds of each step of a loop (``with timer: ...`` per step; ``times``)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._t0 = 0.0

    def __enter__(self) -> "Timer":
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.times.append(time.perf_counter() - self._t0)
