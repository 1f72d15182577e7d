"""The compression chapter's pipeline: pretrain an STBP conv SNN, then for each strategy run
ADMM (or one-shot projection), hard-project, fine-tune under the constraint, and measure."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd
import torch
from torch import Tensor, nn

from compendium.book.quantities import Quantity
from compendium.compression.activity import SpikeActivity
from compendium.compression.admm import ADMM, compressible, constrained_finetuning, hard_project
from compendium.compression.metrics import compression_metrics
from compendium.compression.projections import Constraint
from compendium.learning import evaluate, fit
from compendium.spiking.nets import SpikingClassifier, spiking_convnet

Data = tuple[Tensor, Tensor]
Measured = dict[str, "Quantity | str"]  # a quantity, or the reason it could not be measured


@dataclass(frozen=True)
class Setup:
    """Everything that fixes one compression run (see the chapter's parameters).

    ``admm_updates_per_epoch``: ADMM iterations (Z- and U-steps, each followed by ``ρ ← ρ ·
    rho_growth``) per ADMM epoch, evenly spaced in optimiser steps. The official script does
    one per epoch over 30 epochs; with the few epochs a CPU profile affords, one per epoch
    would leave ADMM two iterations, so the chapter spaces them by steps instead (ours)."""

    T: int = 4
    channels: tuple[int, int] = (16, 32)
    hidden: int = 128
    decay: float = 0.5
    threshold: float = 0.5
    pretrain_epochs: int = 4
    admm_epochs: int = 3
    finetune_epochs: int = 2
    lr: float = 1e-3
    finetune_lr: float = 5e-4
    batch_size: int = 64
    rho: float = 1e-3
    rho_growth: float = 2.0
    admm_updates_per_epoch: int = 1
    device: str = "cpu"
    seed: int = 0
    in_channels: int = 1  # 3 for CIFAR-10
    image_size: int = 28  # 32 for CIFAR-10
    eval_batch_size: int = 64  # on 2 CPU cores a batch of 64 evaluates ~1.5x faster per image than 256
    channels_last: bool = True  # NHWC convolutions and pooling: the same arithmetic, ~20 % faster on a CPU


def make_model(setup: Setup) -> SpikingClassifier:
    """The chapter's STBP conv SNN (rate-coded input, hard reset, current readout), seeded by
    ``setup.seed``. With ``setup.channels_last`` the weights are stored NHWC, which only
    changes the memory layout (mkldnn convolutions and a vectorised max-pool) and makes a
    training step ~20 % faster on the CPU; the multi-step LIF layers run the fused kernel
    (:func:`compendium.spiking.neuron.lif_sequence`) because decay and threshold are fixed."""
    torch.manual_seed(setup.seed)
    model = spiking_convnet(T=setup.T, channels=setup.channels, hidden=setup.hidden, encoding="rate",
                            in_channels=setup.in_channels, image_size=setup.image_size,
                            lif={"decay": setup.decay, "threshold": setup.threshold})
    if setup.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def firing_at_init(setup: Setup, x: Tensor) -> list[float]:
    """Mean firing rate of every LIF layer of the freshly initialised network (seed
    ``setup.seed``) on the images ``x``, in training mode as in the first training step. A
    layer at 0 would pass no surrogate gradient: the network could not learn (the check every
    spiking chapter makes; :func:`compendium.spiking.init.firing_rates`)."""
    from compendium.spiking.init import firing_rates

    return firing_rates(make_model(setup), x)


def layer_constraints(model: nn.Module, constraint: Constraint) -> dict[str, Constraint]:
    """Per-layer constraints from one target. The bit width applies to every synaptic layer.
    The sparsity applies to the largest layer; a smaller layer ``l`` keeps a larger fraction,
    ``density_l = min(1, (1 - s) · sqrt(n_max / n_l))`` (ours: the paper prunes its layers to
    different ratios — 83/92/99.1/93 % in the official MNIST script — but its rule could not
    be read). A layer left dense is only quantised, or not constrained."""
    mods = compressible(model)
    n_max = max(m.weight.numel() for m in mods.values())
    out: dict[str, Constraint] = {}
    for n, m in mods.items():
        sparsity = None
        if constraint.sparsity is not None:
            density = min(1.0, (1.0 - constraint.sparsity) * (n_max / m.weight.numel()) ** 0.5)
            sparsity = 1.0 - density if density < 1.0 else None
        if sparsity is not None or constraint.bits is not None:
            out[n] = Constraint(sparsity=sparsity, bits=constraint.bits)
    return out


def pretrain(train: Data, test: Data | None, setup: Setup) -> tuple[SpikingClassifier, Any]:
    """Train the uncompressed network; its test accuracy is measured once, after the last
    epoch (``history.last("test_acc")``), not after every epoch."""
    model = make_model(setup)
    hist = fit(model, train, epochs=setup.pretrain_epochs, lr=setup.lr, batch_size=setup.batch_size,
               device=setup.device, seed=setup.seed, desc="pretrain", show_progress=False)
    if test is not None:
        hist.records[-1]["test_acc"] = evaluate(model, test, batch_size=setup.eval_batch_size, device=setup.device)["acc"]
    return model, hist


class _ADMMSteps:
    """Runs the ADMM Z/U-steps every ``every`` optimiser steps of the W-step training.

    Called at the start of each training loss evaluation: when ``every`` steps have been
    taken since the last update, the weights are those after the latest optimiser step, so
    the update sees exactly the W an epoch-end update would. :meth:`finish` does the last
    update after the final step."""

    def __init__(self, admm: ADMM, every: int):
        self.admm, self.every, self.steps = admm, max(1, int(every)), 0

    def before_step(self) -> None:
        if self.steps and self.steps % self.every == 0:
            self.admm.update()
        self.steps += 1

    def finish(self) -> None:
        self.admm.update()


def _loss(activity: SpikeActivity | None, lam: float, admm: ADMM | None,
          schedule: _ADMMSteps | None = None) -> Callable[[Tensor, Tensor], Tensor]:
    def loss(out: Tensor, y: Tensor) -> Tensor:
        value = nn.functional.cross_entropy(out, y)
        if activity is not None:
            rate = activity.penalty()
            value = value + lam * rate
        if admm is not None and torch.is_grad_enabled():
            if schedule is not None:
                schedule.before_step()
            value = value + admm.penalty()
        return value
    return loss


def compress(base: SpikingClassifier, train: Data, test: Data, setup: Setup, *, constraint: Constraint | None = None,
             method: str = "admm", activity: float = 0.0, count_inputs: Tensor | None = None,
             name: str = "", measure_projection: bool = True, keep_model: bool = True) -> dict[str, Any]:
    """Compress a copy of ``base`` and measure it on ``test``.

    ``method``: ``"admm"`` (``admm_epochs`` of ADMM — STBP on the task loss plus the
    augmented-Lagrangian penalty, with ``admm_updates_per_epoch`` Z/U-steps per epoch — then
    the hard projection and ``finetune_epochs`` of constrained fine-tuning) or ``"oneshot"``
    (projection of the pretrained weights, then constrained fine-tuning for the same total
    ``admm_epochs + finetune_epochs``). Both train with Adam at ``setup.finetune_lr``.
    ``activity``: λ of the spike-count penalty, in every phase. With ``constraint=None`` only
    the activity regulariser acts (same epochs). ``measure_projection`` also evaluates the
    network right after the hard projection; ``count_inputs`` counts spikes and operations
    on those images. The row keeps the compressed model under ``"model"`` if ``keep_model``."""
    if method not in ("admm", "oneshot"):
        raise ValueError(f"method must be 'admm' or 'oneshot', got {method!r}")
    model = copy.deepcopy(base).to(setup.device)
    constraints = layer_constraints(model, constraint) if constraint is not None else {}
    residuals: list[dict[str, float]] = []
    acc_projected = None
    ev = dict(batch_size=setup.eval_batch_size, device=setup.device)
    with SpikeActivity(model) if activity > 0 else contextlib.nullcontext() as act_ctx:
        total = setup.admm_epochs + setup.finetune_epochs
        common = dict(batch_size=setup.batch_size, device=setup.device, seed=setup.seed, show_progress=False)
        if constraint is None:
            fit(model, train, epochs=total, lr=setup.finetune_lr, loss_fn=_loss(act_ctx, activity, None),
                desc=f"{name} activity", **common)
        else:
            ft_epochs = setup.finetune_epochs
            if method == "admm":
                admm = ADMM(model, constraints, rho=setup.rho, growth=setup.rho_growth)
                steps_per_epoch = -(-len(train[0]) // setup.batch_size)
                schedule = _ADMMSteps(admm, -(-steps_per_epoch // setup.admm_updates_per_epoch))
                fit(model, train, epochs=setup.admm_epochs, lr=setup.finetune_lr,
                    loss_fn=_loss(act_ctx, activity, admm, schedule), desc=f"{name} ADMM", **common)
                schedule.finish()
                residuals = admm.residuals
            else:
                ft_epochs = total
            hard_project(model, constraints)
            if measure_projection:
                acc_projected = evaluate(model, test, **ev)["acc"]
            with constrained_finetuning(model, constraints):
                fit(model, train, epochs=ft_epochs, lr=setup.finetune_lr, loss_fn=_loss(act_ctx, activity, None),
                    desc=f"{name} fine-tune", **common)
    row: dict[str, Any] = {"strategy": name or (constraint.describe() if constraint else f"activity {activity:g}"),
                           "method": method if constraint is not None else "-", "sparsity": constraint.sparsity if constraint else None,
                           "bits": constraint.bits if constraint else None, "activity": activity,
                           "acc": evaluate(model, test, **ev)["acc"],
                           "acc_after_projection": acc_projected,
                           "constraint_holds": all(c.satisfied(compressible(model)[n].weight.detach()) for n, c in constraints.items()),
                           "admm_primal_residual": residuals[-1]["primal"] if residuals else None,
                           "admm_iterations": len(residuals) if residuals else None}
    metrics = compression_metrics(model, constraints, count_inputs, time_steps=setup.T)
    row.update({k: v for k, v in metrics.items() if k != "layers"})
    if keep_model:
        row["model"] = model
    return row


# --- ADMM against one-shot pruning, each tuned with the same budget ---------------------------
TUNABLE = ("rho", "rho_growth", "finetune_lr")


@dataclass
class MethodComparison:
    """ADMM and one-shot pruning at one sparsity: the tuning trials (validation accuracy of
    each setting), each method's chosen setting, and the final runs (one row per method and
    seed, evaluated on the test images)."""

    sparsity: float
    trials: list[dict[str, Any]]
    chosen: dict[str, dict[str, float]]
    runs: list[dict[str, Any]]
    seeds: list[int]
    budget: dict[str, Any]

    def rows(self, method: str) -> list[dict[str, Any]]:
        """The final runs of ``method`` in seed order."""
        return sorted((r for r in self.runs if r["method"] == method), key=lambda r: r["seed"])

    def acc_samples(self, method: str) -> list[float]:
        """Per-seed test accuracies of ``method`` (seed order): the replicates of the claim."""
        return [float(r["acc"]) for r in self.rows(method)]

    def trials_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.trials)

    def runs_frame(self) -> pd.DataFrame:
        return pd.DataFrame([{k: v for k, v in r.items() if k != "model"} for r in self.runs])


def _setting_text(setting: dict[str, float]) -> str:
    names = {"rho": "ρ0", "rho_growth": "growth", "finetune_lr": "lr"}
    return ", ".join(f"{names[k]}={v:g}" for k, v in setting.items())


def compare_pruning_methods(base: SpikingClassifier, train: Data, test: Data, setup: Setup, *, sparsity: float,
                            trials: dict[str, list[dict[str, float]]], seeds: list[int], val_fraction: float = 0.1,
                            split_seed: int = 0, count_inputs: Tensor | None = None) -> MethodComparison:
    """ADMM against one-shot pruning of the same pretrained network, with the same budget.

    Each method (``"admm"``, ``"oneshot"``) gets the same number of tuning trials: a trial is
    a setting of :data:`TUNABLE` fields of ``setup`` (e.g. ADMM's initial ρ, one-shot's
    fine-tuning learning rate), run on the training part of a ``val_fraction`` split of
    ``train`` (seed ``split_seed``) under the first seed and scored on the held-out part; the
    best validation accuracy is chosen (ties: the earlier trial). The test images are never
    looked at while tuning. Then every method runs at its chosen setting on the whole
    training set under each seed (same seed, same shuffles and input spikes for both methods:
    the runs are paired by seed) and is evaluated on ``test``. Both methods train for the same
    ``admm_epochs + finetune_epochs`` epochs after pretraining (:func:`compress`).
    The first seed's runs also measure the accuracy right after the hard projection and count
    spikes and operations on ``count_inputs`` (for the chapter's table).
    """
    from compendium.learning.tuning import validation_split

    methods = ("admm", "oneshot")
    if set(trials) != set(methods):
        raise ValueError(f"trials must name exactly {methods}, got {sorted(trials)}")
    counts = {m: len(trials[m]) for m in methods}
    if min(counts.values()) < 1 or len(set(counts.values())) != 1:
        raise ValueError(f"each method needs the same number (>= 1) of tuning trials, got {counts}")
    for m in methods:
        for t in trials[m]:
            unknown = set(t) - set(TUNABLE)
            if unknown:
                raise ValueError(f"trial {t} of {m}: only {TUNABLE} can be tuned, not {sorted(unknown)}")
    if not seeds:
        raise ValueError("compare_pruning_methods needs at least one seed")
    constraint = Constraint(sparsity=sparsity)
    fit_part, val = validation_split(train, val_fraction, split_seed)
    records: list[dict[str, Any]] = []
    chosen: dict[str, dict[str, float]] = {}
    for m in methods:
        best: tuple[dict[str, float], float] | None = None
        for t in trials[m]:
            if counts[m] == 1:  # nothing to choose: no trial is spent
                best = (dict(t), float("nan"))
                break
            s = dataclasses.replace(setup, seed=seeds[0], **t)
            r = compress(base, fit_part, val, s, constraint=constraint, method=m, measure_projection=False,
                         keep_model=False)
            records.append({"method": m, "setting": _setting_text(t), **t, "val_acc": r["acc"],
                            "admm_primal_residual": r["admm_primal_residual"]})
            if best is None or r["acc"] > best[1]:
                best = (dict(t), r["acc"])
        chosen[m] = best[0]
    runs = []
    for i, seed in enumerate(seeds):
        for m in methods:
            s = dataclasses.replace(setup, seed=seed, **chosen[m])
            r = compress(base, train, test, s, constraint=constraint, method=m, keep_model=False,
                         count_inputs=count_inputs if i == 0 else None, measure_projection=i == 0,
                         name=f"{'ADMM' if m == 'admm' else 'one-shot'} prune {sparsity:.0%}")
            r.update(seed=seed, setting=_setting_text(chosen[m]))
            runs.append(r)
    budget = {"trials": counts["admm"], "val_fraction": val_fraction, "seeds": list(seeds),
              "epochs": setup.admm_epochs + setup.finetune_epochs, "n_fit": len(fit_part[0]), "n_val": len(val[0])}
    return MethodComparison(sparsity, records, chosen, runs, list(seeds), budget)


# --- quantities for the claims ----------------------------------------------------------------
# Every accuracy is a rate over the test images (Wilson interval); spike and operation counts
# and model sizes come from one training run each (single runs, no interval).

def accuracy(name: str, acc: float, n_test: int) -> Quantity:
    """A test accuracy as a rate: ``round(acc · n_test)`` correct of ``n_test`` images (Wilson)."""
    return Quantity.rate(name, int(round(float(acc) * n_test)), int(n_test))


def _is_joint(table: pd.DataFrame) -> pd.Series:
    return table["sparsity"].notna() & table["bits"].notna()


def minimal_loss_quantities(table: pd.DataFrame, n_test: int, *, min_sparsity: float = 0.9) -> Measured:
    """Accuracies behind "pruning and quantisation at minimal loss", each over the test images:
    ``admm_prune_acc`` of ADMM pruning alone at the smallest sparsity ≥ ``min_sparsity`` (of
    the largest layer) that ran, and ``ternary_acc`` of ADMM ternary (2-bit) quantisation
    alone. ``table`` has one row per strategy (the chapter's ``compress`` rows). A missing
    strategy comes back as the reason."""
    out: Measured = {}
    admm = table[table["method"] == "admm"]
    deep = admm[admm["bits"].isna() & admm["sparsity"].notna() & (admm["sparsity"] >= min_sparsity)]
    if deep.empty:
        out["admm_prune_acc"] = f"this profile ran no ADMM pruning at a sparsity of {min_sparsity:.0%} or more"
    else:
        out["admm_prune_acc"] = accuracy("admm_prune_acc", deep.sort_values("sparsity").iloc[0]["acc"], n_test)
    ternary = admm[(admm["bits"] == 2) & admm["sparsity"].isna()]
    if ternary.empty:
        out["ternary_acc"] = "this profile ran no ternary (2-bit) quantisation without pruning"
    else:
        out["ternary_acc"] = accuracy("ternary_acc", ternary.iloc[0]["acc"], n_test)
    return out


def method_comparison_quantities(cmp: "MethodComparison | None") -> Measured:
    """The replicates behind "ADMM beats one-shot pruning": ``admm_deep_acc`` and
    ``oneshot_deep_acc``, the per-seed test accuracies of the two methods at the compared
    sparsity (seed order, so the rule can pair them; t-interval). Without a comparison both
    come back as the reason."""
    if cmp is None or not cmp.runs:
        why = "this profile ran no ADMM against one-shot comparison (compare_sparsity unset)"
        return {"admm_deep_acc": why, "oneshot_deep_acc": why}
    return {"admm_deep_acc": Quantity.from_samples("admm_deep_acc", cmp.acc_samples("admm")),
            "oneshot_deep_acc": Quantity.from_samples("oneshot_deep_acc", cmp.acc_samples("oneshot"))}


def detectable_difference(cmp: "MethodComparison | None") -> float:
    """Half-width of the paired 95 % t-interval of ADMM − one-shot over the seeds: the
    smallest difference of mean accuracies whose interval would exclude 0 at the observed
    seed-to-seed spread (``t_{0.975, n-1} · s_d / sqrt(n)``). NaN with fewer than two seeds."""
    from compendium.book.quantities import difference

    q = method_comparison_quantities(cmp)
    a, b = q["admm_deep_acc"], q["oneshot_deep_acc"]
    if isinstance(a, str) or a.n < 2:
        return float("nan")
    d = difference(a, b, paired=True)
    return (d.high - d.low) / 2


def comparison_summary(cmp: "MethodComparison | None") -> dict[str, Any]:
    """The numbers the chapter's prose quotes about the ADMM/one-shot comparison (not a
    verdict: that is the rule's, from :func:`method_comparison_quantities`): the chosen
    settings, the mean test accuracies, ADMM − one-shot as text with its paired interval, the
    first seed's accuracies right after the hard projection, and :func:`detectable_difference` in
    points; and the size of the validation split with the 95 % sampling half-width, in points,
    of a validation accuracy near 90 % on it (``1.96 · sqrt(0.9 · 0.1 / n_val)``): trials closer
    than that are chosen between by chance. Without a comparison, text fields read "n/a" and
    numbers are NaN."""
    from compendium.book.quantities import difference

    nan = float("nan")
    if cmp is None or not cmp.runs:
        return {"cmp_sparsity_pct": "n/a", "admm_chosen": "n/a", "oneshot_chosen": "n/a", "cmp_diff_text": "n/a",
                "admm_mean": nan, "oneshot_mean": nan, "admm_projected": nan, "oneshot_projected": nan,
                "detectable_pts": nan, "n_val_text": "n/a", "val_noise_pts": nan}
    q = method_comparison_quantities(cmp)
    a, o = q["admm_deep_acc"], q["oneshot_deep_acc"]
    if a.n > 1:
        d = difference(a, o, paired=True)
        diff = f"{100 * d.estimate:+.2f} points [{100 * d.low:+.2f}, {100 * d.high:+.2f}]"
    else:
        diff = f"{100 * (a.estimate - o.estimate):+.2f} points (one seed, no interval)"
    return {"cmp_sparsity_pct": f"{cmp.sparsity:.0%}", "admm_chosen": _setting_text(cmp.chosen["admm"]),
            "oneshot_chosen": _setting_text(cmp.chosen["oneshot"]), "cmp_diff_text": diff,
            "admm_mean": a.estimate, "oneshot_mean": o.estimate,
            "admm_projected": cmp.rows("admm")[0]["acc_after_projection"],
            "oneshot_projected": cmp.rows("oneshot")[0]["acc_after_projection"],
            "detectable_pts": 100 * detectable_difference(cmp),
            "n_val_text": f"{cmp.budget['n_val']:,} validation images",
            "val_noise_pts": 100 * 1.96 * (0.9 * 0.1 / cmp.budget["n_val"]) ** 0.5}


def activity_quantities(table: pd.DataFrame, n_test: int) -> Measured:
    """The activity regulariser at its largest weight λ against the λ = 0 control (same
    extra training): ``spike_cut`` and ``ops_cut``, the fractions of spikes and of active
    synaptic operations per sample removed (``1 − strong/control``, counted on the same
    images; one run each), and the two test accuracies ``activity_control_acc`` and
    ``activity_strong_acc`` (rates over the test images). Without a λ = 0 row or a λ > 0 row
    every quantity comes back as the reason."""
    act = table[table["sparsity"].isna() & table["bits"].isna()]
    ctrl, strong = act[act["activity"] == 0], act[act["activity"] > 0]
    names = ("spike_cut", "ops_cut", "activity_control_acc", "activity_strong_acc")
    if ctrl.empty or strong.empty:
        why = "this profile ran no activity weight lambda > 0 beside the lambda = 0 control"
        return {n: why for n in names}
    c, s = ctrl.iloc[0], strong.sort_values("activity").iloc[-1]
    return {"spike_cut": Quantity.single("spike_cut", 1 - s["spikes_per_sample"] / c["spikes_per_sample"]),
            "ops_cut": Quantity.single("ops_cut", 1 - s["active_ops"] / c["active_ops"]),
            "activity_control_acc": accuracy("activity_control_acc", c["acc"], n_test),
            "activity_strong_acc": accuracy("activity_strong_acc", s["acc"], n_test)}


def joint_quantities(table: pd.DataFrame, base_acc: float, n_test: int, *, max_loss: float = 0.02) -> Measured:
    """Which kind of strategy compresses the model most at a small accuracy cost.

    Among the strategies within ``max_loss`` (2 points) of the uncompressed network's test
    accuracy, the largest model-size compression of a *joint* strategy (pruning and
    quantisation together) against that of a *single-technique* one (pruning, quantisation or
    the activity regulariser alone); the uncompressed network (1×) is the floor of both.

    Each accuracy is a rate over the ``n_test`` test images, so "within 2 points" is itself
    uncertain. Each strategy's loss ``acc − base_acc`` gets the MOVER interval of two Wilson
    intervals (as in :func:`minimal_loss_quantities`; it ignores that the images are shared,
    so it is conservative): a strategy *qualifies* when the whole interval lies above
    ``−max_loss``, is *out* when it lies at or below, and is *undecided* otherwise. Then

    - ``joint_best_compression``, ``single_best_compression``: the best of each kind among the
      strategies within 2 points on the point estimates (single runs; what the prose quotes);
    - ``joint_over_single_compression``: joint − single best compression, estimate from the
      point estimates, range from every classification the intervals allow — low: joint
      counting only qualified strategies, single counting qualified and undecided ones;
      high: the reverse. It is a bound over the undecided strategies, not a sampling interval
      of the compressions themselves (those are deterministic given the trained weights), and
      is reported as ``given``. The claim is decided only when every admissible
      classification agrees. (Each strategy's interval is a 95 % interval on its own, with no
      correction for the number of strategies: the range is a bound given those intervals,
      not a joint 95 % statement.)

    Without any joint strategy in ``table`` the joint quantities come back as the reason."""
    from compendium.book.quantities import difference

    if n_test < 1:
        raise ValueError(f"n_test must be a positive number of test images, got {n_test}")
    base = accuracy("base_acc", base_acc, n_test)
    loss = [difference(accuracy("acc", a, n_test), base) for a in table["acc"]]
    point = pd.Series([a >= base_acc - max_loss for a in table["acc"]], index=table.index)
    qualified = pd.Series([d.low > -max_loss for d in loss], index=table.index)
    possible = pd.Series([d.high > -max_loss for d in loss], index=table.index)
    qualified, possible = qualified & point, possible | point  # the point classification lies between the extremes
    joint = _is_joint(table)

    def best(mask: pd.Series) -> float:
        return float(max([1.0] + [float(v) for v in table.loc[mask, "size_compression"]]))

    single_point = best(point & ~joint)
    out: Measured = {"single_best_compression": Quantity.single("single_best_compression", single_point)}
    if not joint.any():
        why = "this profile ran no joint (pruning + quantisation) strategy"
        out["joint_best_compression"] = out["joint_over_single_compression"] = why
        return out
    joint_point = best(point & joint)
    out["joint_best_compression"] = Quantity.single("joint_best_compression", joint_point)
    low = best(qualified & joint) - best(possible & ~joint)
    high = best(possible & joint) - best(qualified & ~joint)
    out["joint_over_single_compression"] = Quantity.given("joint_over_single_compression", joint_point - single_point,
                                                          low, high, 1)
    return out
