"""Fair comparisons: every variant gets the same tuning budget, then several seeds.

A verdict won against a baseline that was trained with a learning rate chosen for the
method is a defect. :func:`compare_tuned` gives each variant (method and baselines alike)
the same learning-rate trials, selects each variant's learning rate on a validation split
carved from the training data (the test set is never looked at while tuning), and then
trains every variant with its chosen rate under several seeds, so that the chapter can
report per-seed test accuracies (a t-interval) and test-set correct counts.
All training goes through :func:`compendium.learning.fit`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from compendium import smoke
from compendium.learning.train import History, evaluate, fit

Split = tuple[Tensor, Tensor]


def validation_split(train: Split, fraction: float, seed: int = 0) -> tuple[Split, Split]:
    """Split ``(x, y)`` into ``(train, val)`` with ``fraction`` of the samples held out (seeded)."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    x, y = train
    n_val = max(1, int(round(fraction * len(x))))
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    va, tr = perm[:n_val], perm[n_val:]
    return (x[tr], y[tr]), (x[va], y[va])


def choose_rate(trials: Iterable[tuple[float, float]]) -> float:
    """The learning rate of the best trial: ``argmax_lr score(lr)`` over ``(lr, score)`` pairs
    (validation accuracy; higher is better), ties going to the smaller rate. The selection rule
    of the learning-rate tunings (:func:`compare_tuned`, the hybrid chapter's MLP and few-shot
    tunings), so that a change to it is a change in one place; the compression chapter's pruning
    trials, whole settings rather than rates, keep the first best in their declared order."""
    best: tuple[float, float] | None = None
    for lr, score in sorted((float(lr), float(score)) for lr, score in trials):
        if best is None or score > best[1]:
            best = (lr, score)
    if best is None:
        raise ValueError("choose_rate needs at least one trial")
    return best[0]


@dataclass
class TunedRun:
    """One final training run: a variant at its chosen learning rate under one seed."""

    variant: str
    lr: float
    seed: int
    history: History
    test_correct: int
    test_n: int
    probes: list[dict[str, Any]] = field(default_factory=list)  # per epoch (epoch 0: before training)
    model: nn.Module | None = field(default=None, repr=False)  # the trained model, when asked to keep it

    @property
    def test_acc(self) -> float:
        return self.test_correct / self.test_n


@dataclass
class TunedComparison:
    """The tuning trials, each variant's chosen learning rate and the final per-seed runs."""

    trials: list[dict[str, Any]]
    chosen: dict[str, float]
    runs: list[TunedRun]
    budget: dict[str, Any]

    def variants(self) -> list[str]:
        return list(self.chosen)

    def runs_of(self, variant: str) -> list[TunedRun]:
        return [r for r in self.runs if r.variant == variant]

    def test_acc_samples(self, variant: str) -> list[float]:
        """Per-seed test accuracies of a variant (seed order), for a t-interval."""
        return [r.test_acc for r in sorted(self.runs_of(variant), key=lambda r: r.seed)]

    def trials_frame(self):
        import pandas as pd

        return pd.DataFrame(self.trials).pivot(index="lr", columns="variant", values="val_acc")

    def summary(self):
        """One row per variant: chosen learning rate, test accuracy mean and per-seed values."""
        import pandas as pd

        rows = []
        for v in self.variants():
            accs = self.test_acc_samples(v)
            rows.append({"variant": v, "chosen lr": self.chosen[v], "seeds": len(accs),
                         "test acc (mean)": sum(accs) / len(accs), "per seed": ", ".join(f"{a:.3f}" for a in accs),
                         "final train loss (mean)": sum(r.history.last("train_loss") for r in self.runs_of(v)) / len(accs)})
        return pd.DataFrame(rows).set_index("variant")

    def budget_text(self) -> str:
        b = self.budget
        if len(b["lrs"]) == 1:
            return (f"each variant: learning rate {b['lrs'][0]:g} (no tuning trials); "
                    f"{len(b['seeds'])} seed(s) × {b['epochs']} epoch(s)")
        return (f"each variant: {len(b['lrs'])} learning-rate trials ({', '.join(f'{lr:g}' for lr in b['lrs'])}) of "
                f"{b['tune_epochs']} epoch(s), selected on a {b['val_fraction']:.0%} validation split of the training "
                f"data; then {len(b['seeds'])} seed(s) × {b['epochs']} epoch(s) at the chosen rate")


def compare_tuned(builders: Mapping[str, Callable[[], nn.Module]], train: Split, test: Split, *,
                  lrs: Sequence[float], tune_epochs: int, epochs: int, seeds: Sequence[int], val_fraction: float = 0.1,
                  split_seed: int = 0, batch_size: int = 64, device: str = "cpu",
                  probe: Callable[[nn.Module, int], dict[str, Any]] | None = None,
                  fit_kwargs: Mapping[str, Any] | None = None, show_progress: bool = True,
                  test_each_epoch: bool = False, keep_models: bool = False) -> TunedComparison:
    """Tune every variant's learning rate with the same trials, then train each under ``seeds``.

    ``builders[v]()`` returns a fresh, untrained model of variant ``v`` (it is called after
    the seed is set, so initialisation follows the seed). Tuning trains each variant once per
    learning rate in ``lrs`` for ``tune_epochs`` on the training part of a
    ``val_fraction`` split (seed ``split_seed``, first of ``seeds``) and keeps the rate with
    the best validation accuracy (:func:`choose_rate`; ties: the smaller rate); a single rate is used as given,
    without trials. The final runs train on the whole
    training set for ``epochs`` and are evaluated on ``test``. ``probe(model, epoch)``, if
    given, is called on each final run before training (epoch 0) and after every epoch;
    ``test_each_epoch`` records the test accuracy of the final runs after every epoch (for
    training curves; it plays no part in any selection, and the last epoch's value is the run's
    final test count, read instead of a second pass over the test set); ``keep_models`` keeps each final
    run's trained model on its :class:`TunedRun`."""
    if not builders or not lrs or not seeds:
        raise ValueError("compare_tuned needs at least one variant, one learning rate and one seed")
    lrs = smoke.take(list(lrs))  # smoke mode: two trials (every seed runs: notebooks index the runs by seed)
    kw = dict(fit_kwargs or {})
    fit_train, val = validation_split(train, val_fraction, split_seed)
    trials, chosen = [], {}
    for variant, build in builders.items():
        if len(lrs) == 1:  # nothing to choose: no trial is spent
            chosen[variant] = float(lrs[0])
            continue
        scores = []
        for lr in sorted(lrs):
            torch.manual_seed(seeds[0])
            model = build()
            fit(model, fit_train, epochs=tune_epochs, lr=lr, batch_size=batch_size, device=device, seed=seeds[0],
                desc=f"tune {variant} lr={lr:g}", show_progress=show_progress, **kw)
            acc = evaluate(model, val, device=device)["acc"]
            trials.append({"variant": variant, "lr": lr, "val_acc": acc})
            scores.append((lr, acc))
        chosen[variant] = choose_rate(scores)
    runs = []
    for variant, build in builders.items():
        for seed in seeds:
            torch.manual_seed(seed)
            model = build()
            probes = [dict(epoch=0, **probe(model, 0))] if probe else []
            on_epoch = (lambda ep, _rec, m=model, p=probes: p.append(dict(epoch=ep, **probe(m, ep)))) if probe else None
            hist = fit(model, train, epochs=epochs, lr=chosen[variant], batch_size=batch_size, device=device, seed=seed,
                       test=test if test_each_epoch else None, desc=f"{variant} seed {seed}",
                       show_progress=show_progress, on_epoch=on_epoch, **kw)
            if test_each_epoch and hist.records and "metric" not in kw and "metric_name" not in kw:
                acc = hist.last("test_acc")  # fit has just evaluated this model on the test set
            else:
                acc = evaluate(model, test, device=device)["acc"]
            n = len(test[1])
            runs.append(TunedRun(variant, chosen[variant], seed, hist, int(round(acc * n)), n, probes,
                                 model if keep_models else None))
    budget = {"lrs": list(lrs), "tune_epochs": tune_epochs, "epochs": epochs, "seeds": list(seeds),
              "val_fraction": val_fraction}
    return TunedComparison(trials, chosen, runs, budget)
