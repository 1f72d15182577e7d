"""The one training loop: epochs, optimizer, schedule, device, seeds, determinism,
progress, per-epoch metrics, checkpoint/resume and a guard against NaN/inf losses.

Every chapter trains through :func:`fit`; a model maps a batch of inputs ``[B, ...]`` to
logits ``[B, classes]`` (spiking models own their input coding and time loop). The per-epoch
metric is a hook (``metric``, default :func:`accuracy`), so loops that are not classification
(regression, tracking, a loss-only run with ``metric=None``) get the same guard, schedule,
seeding and checkpoints.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from compendium import smoke
from compendium.learning import distributed
from compendium.progress import interactive, progress

Data = Dataset | tuple[Tensor, Tensor]
Metric = Callable[[Tensor, Tensor], "Tensor | float"]


def accuracy(out: Tensor, y: Tensor) -> Tensor:
    """The default metric: the share of rows whose largest output (``argmax(1)``) is the label."""
    return (out.argmax(1) == y).float().mean()


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says when."""


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` (an error if absent) or ``auto`` (cuda when available)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was asked for but torch sees no CUDA device; use device='cpu' or 'auto'")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")
    return torch.device(device)


@dataclass
class History:
    """Per-epoch metrics of one training run (``records``: one dict per epoch)."""

    records: list[dict[str, float]] = field(default_factory=list)

    def __getitem__(self, key: str) -> list[float]:
        return [r.get(key, float("nan")) for r in self.records]

    def last(self, key: str) -> float:
        return self.records[-1][key]

    def at_best(self, select: str = "val_acc", report: str = "test_acc") -> tuple[int, float]:
        """``(epoch, report value)`` at the epoch where ``select`` peaked (first such epoch)."""
        values = self[select]
        i = max(range(len(values)), key=lambda j: values[j])
        return int(self.records[i]["epoch"]), self.records[i][report]

    def first_epoch(self, key: str, at_least: float) -> int | None:
        """The first epoch whose ``key`` reached ``at_least`` (``None`` if it never did)."""
        for r in self.records:
            if r.get(key, float("-inf")) >= at_least:
                return int(r["epoch"])
        return None

    def frame(self):
        import pandas as pd

        return pd.DataFrame(self.records)

    def plot(self, keys: tuple[str, ...] = ("train_loss", "test_acc"), axes=None, label: str | None = None):
        import matplotlib.pyplot as plt

        if axes is None:
            _, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3))
        axes = np.atleast_1d(axes)
        for ax, key in zip(axes, keys):
            ax.plot(self["epoch"], self[key], marker="o", label=label)
            ax.set_xlabel("epoch")
            ax.set_ylabel(key.replace("_", " "))
        return axes


class TensorBatches(TensorDataset):
    """A :class:`~torch.utils.data.TensorDataset` that gives the DataLoader a whole batch at
    once (``__getitems__``): ``t[indices]`` for each tensor — one indexing operation per tensor,
    instead of one per sample and per tensor followed by ``default_collate``'s stack. The same
    batches bit for bit (values, dtypes, contiguous layout); for a batch of 64 MNIST images the
    Python loop over samples it replaces cost about as much as a small MLP's training step."""

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, ...]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return tuple(t[idx] for t in self.tensors)


def _whole_batch(batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return batch  # TensorBatches.__getitems__ has made the batch already


def _dataset(data: Data) -> Dataset:
    return TensorBatches(*data) if isinstance(data, tuple) else data


def _collate(ds: Dataset) -> Callable | None:
    return _whole_batch if isinstance(ds, TensorBatches) else None  # None: DataLoader's default_collate


def _loader(data: Data, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    ds = _dataset(data)
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g, collate_fn=_collate(ds))


@torch.no_grad()
def evaluate(model: nn.Module, data: Data, loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
             batch_size: int = 256, device: str | torch.device = "cpu", metric: Metric | None = accuracy,
             metric_name: str = "acc") -> dict[str, float]:
    """Mean loss and mean ``metric`` (default: accuracy, as ``"acc"``) of ``model`` on ``data``
    (eval mode); ``metric=None`` reports the loss only. Batch means are weighted by batch size."""
    loss_fn = loss_fn or nn.functional.cross_entropy
    dev = torch.device(device)
    was_training = model.training
    model.eval()
    total, metric_sum, loss_sum = 0, 0.0, 0.0
    loader = _loader(data, batch_size, False, 0)
    for i, batch in enumerate(loader):
        if i >= smoke.limit(len(loader)):  # smoke mode: the first batches only
            break
        *xs, y = (t.to(dev) for t in batch)
        out = model(*xs)
        loss_sum += float(loss_fn(out, y)) * len(y)
        if metric is not None:
            metric_sum += float(metric(out, y)) * len(y)
        total += len(y)
    model.train(was_training)
    out = {"loss": loss_sum / total}
    if metric is not None:
        out[metric_name] = metric_sum / total
    return out


def fit(model: nn.Module, train: Data, *, epochs: int, lr: float = 1e-3, batch_size: int = 64,
        test: Data | None = None, optimizer: str | Callable[..., torch.optim.Optimizer] = "adam",
        weight_decay: float = 0.0, schedule: str | None = None,
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None, device: str = "cpu", seed: int = 0,
        deterministic: bool = False, checkpoint: str | Path | None = None, resume: bool = False,
        desc: str = "train", show_progress: bool = True, eval_batch_size: int = 256,
        val: Data | None = None, decay_filter: Callable[[str, nn.Parameter], bool] | None = None,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None, metric: Metric | None = accuracy,
        metric_name: str = "acc", on_step: Callable[[dict[str, float]], None] | None = None,
        amp: str | None = None, channels_last: bool = False, test_every: int = 1) -> History:
    """Train ``model`` and return its :class:`History`.

    ``optimizer``: ``"adam"``, ``"sgd"`` (momentum 0.9) or a factory ``f(params, lr=...)``;
    ``schedule``: ``None`` or ``"cosine"`` (annealed over ``epochs``). With ``checkpoint``,
    the state (model, optimizer, schedule, history, RNG) is saved atomically after every
    epoch, and ``resume=True`` continues from it. A NaN/inf loss stops training with
    :class:`TrainingDiverged` naming the epoch and step.

    ``metric(out, y)`` is the per-batch metric (its batch mean; default :func:`accuracy`),
    recorded every epoch as ``train_<metric_name>`` and, with ``val``/``test``, as
    ``val_<metric_name>``/``test_<metric_name>``. ``test_every=k`` evaluates ``test`` only after
    every k-th epoch and after the last (the other epochs record no ``test_*``; ``History[key]``
    reads NaN there): for a run whose test curve nobody reads, it saves the passes over the test
    set. The trained model is the same whenever the model's evaluation draws no random numbers
    (the evaluation loader has its own generator; a rate encoder's draws in evaluation do move
    the global stream that training draws from). Pass e.g. ``metric=lambda out, y: (out - y).abs().mean(),
    metric_name="mae"`` for a regression loop, or ``metric=None`` to record losses only.

    ``train`` (and ``val``/``test``) is a tuple of tensors sharing their first dimension, or a
    dataset yielding such tuples: the last is the target, the others are the model's inputs
    (``model(x1, ..., xk)``), so multi-input models (few-shot episodes: support, support
    labels, query) use the same loop. ``on_step(record)``, if given, receives every step's
    ``{"epoch", "step", "loss", metric_name}`` (a per-step learning curve).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the run is data-parallel
    (:mod:`compendium.learning.distributed`): ``batch_size`` is the global batch, split over
    the ranks; DistributedDataParallel averages the gradients; the history holds the global
    means on every rank; only rank 0 prints, shows progress and writes the checkpoint, which
    every rank resumes from. On CUDA, ``amp="bf16"`` trains under bfloat16 autocast and
    ``channels_last=True`` uses the channels-last memory format; both are off on the CPU.
    In smoke mode (:mod:`compendium.smoke`) one epoch of at most two steps runs, at a batch
    of at most two, and each step's time is recorded.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not isinstance(test_every, int) or isinstance(test_every, bool) or test_every < 1:
        raise ValueError(f"test_every must be an integer >= 1, got {test_every!r}")
    if amp not in (None, "bf16"):
        raise ValueError(f"amp must be None or 'bf16', got {amp!r}")
    paper_epochs, paper_batch = epochs, batch_size
    if smoke.active():
        epochs = min(epochs, smoke.EPOCHS)
        batch_size = None if batch_size is None else min(batch_size, smoke.BATCH)
    seed_everything(seed, deterministic)
    world, dev = distributed.setup(resolve_device(device))
    main = world.main
    show_progress = show_progress and main
    model.to(dev)
    cuda = dev.type == "cuda"
    if channels_last and cuda:
        model.to(memory_format=torch.channels_last)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if amp == "bf16" and cuda
                else torch.autocast("cpu", enabled=False))
    net: nn.Module = model
    if world.distributed:
        if batch_size is not None and batch_size % world.size:
            raise ValueError(f"batch_size {batch_size} (the global batch) must be a multiple of the "
                             f"{world.size} processes")
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if cuda else None)
    loss_fn = loss_fn or nn.functional.cross_entropy
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decayed = [p for n, p in named if decay_filter is None or decay_filter(n, p)]
    exempt = [p for n, p in named if not (decay_filter is None or decay_filter(n, p))]
    params = [{"params": decayed, "weight_decay": weight_decay}] + ([{"params": exempt, "weight_decay": 0.0}] if exempt else [])
    if callable(optimizer):
        opt = optimizer([p for _, p in named], lr=lr)
    elif optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    else:
        raise ValueError(f"optimizer must be 'adam', 'sgd' or a factory, got {optimizer!r}")
    if schedule not in (None, "cosine"):
        raise ValueError(f"schedule must be None or 'cosine', got {schedule!r}")
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs) if schedule == "cosine" else None

    history, start_epoch = History(), 1
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt and resume and ckpt.is_file():
        state = torch.load(ckpt, map_location=dev, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if sched and state.get("scheduler"):
            sched.load_state_dict(state["scheduler"])
        history = History(state["history"])
        start_epoch = state["epoch"] + 1
        torch.set_rng_state(state["rng"])
        if main:
            print(f"{desc}: resumed from {ckpt} after epoch {state['epoch']}", flush=True)

    for epoch in range(start_epoch, epochs + 1):
        # one shuffle seed per epoch, so that a resumed run sees the same batches as an uninterrupted one
        # (the permutation DataLoader(shuffle=True) draws under that seed; each rank takes its share of a global batch)
        ds = _dataset(train)
        if batch_size is None:  # pre-made batches (every rank takes each whole)
            loader = _loader(ds, batch_size, True, seed * 100_003 + epoch)
        else:
            # the loader's own generator: without one, DataLoader draws its base seed from torch's
            # global RNG each epoch, which shifts every later random draw (input spikes, dropout)
            loader = DataLoader(ds, batch_sampler=distributed.ShardedBatchSampler(
                len(ds), batch_size, seed=seed * 100_003 + epoch, rank=world.rank, world=world.size),
                generator=torch.Generator().manual_seed(seed * 100_003 + epoch), collate_fn=_collate(ds))
        model.train()
        t0, seen, metric_sum, loss_sum = time.time(), 0, 0.0, 0.0
        steps = progress(loader, desc=f"{desc} epoch {epoch}/{epochs}", enabled=show_progress and interactive())
        step_times: list[float] = []
        for step, batch in enumerate(steps):
            if step >= smoke.limit(len(loader)):
                break
            ts = time.perf_counter()
            *xs, y = (t.to(dev) for t in batch)
            if channels_last and cuda:
                xs = [x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x for x in xs]
            with autocast:
                out = net(*xs)
                loss = loss_fn(out, y)
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"{desc}: loss became {float(loss.detach())} at epoch {epoch}, step {step} "
                                       f"(lr={opt.param_groups[0]['lr']:g}); lower the learning rate or check the inputs")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step_times.append(time.perf_counter() - ts)
            step_loss = float(loss.detach())
            loss_sum += step_loss * len(y)
            step_metric = None
            if metric is not None:
                with torch.no_grad():
                    step_metric = float(metric(out.detach().float(), y))
                metric_sum += step_metric * len(y)
            seen += len(y)
            if on_step:
                on_step({"epoch": epoch, "step": step, "loss": step_loss}
                        | ({metric_name: step_metric} if metric is not None else {}))
        smoke.record("fit", desc, step_times, batch=batch_size or 1, paper_batch=paper_batch or 1,
                     epochs=paper_epochs, samples=len(ds))
        if world.distributed:  # the global means, on every rank
            loss_sum, metric_sum, seen = distributed.all_sum([loss_sum, metric_sum, float(seen)], dev)
        if sched:
            sched.step()
        rec = {"epoch": epoch, "train_loss": loss_sum / seen}
        if metric is not None:
            rec[f"train_{metric_name}"] = metric_sum / seen
        rec.update({"lr": opt.param_groups[0]["lr"], "time_s": time.time() - t0})
        test_now = epoch % test_every == 0 or epoch == epochs
        for name, data in (("val", val), ("test", test if test_now else None)):
            if data is not None:
                ev = evaluate(model, data, loss_fn, batch_size=eval_batch_size, device=dev, metric=metric,
                              metric_name=metric_name)
                rec.update({f"{name}_{k}": v for k, v in ev.items()})
        history.records.append(rec)
        if show_progress:
            print(f"{desc} epoch {epoch}/{epochs}: " + ", ".join(
                f"{k}={v:.4g}" for k, v in rec.items() if k not in ("epoch", "lr")), flush=True)
        if on_epoch:
            on_epoch(epoch, rec)
        if ckpt and main:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            tmp = ckpt.with_suffix(ckpt.suffix + ".tmp")
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict() if sched else None, "history": history.records,
                        "epoch": epoch, "rng": torch.get_rng_state()}, tmp)
            os.replace(tmp, ckpt)
        if ckpt:
            distributed.barrier()  # no rank resumes from a checkpoint rank 0 has not finished writing
    return history
