"""The compression chapter's pipeline: pretrain an STBP conv SNN, then for each strategy run
ADMM (or one-shot projection), hard-project, fine-tune under the constraint, and measure."""

from __future__ import annotations

import contextlib
import copy
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
    device: str = "cpu"
    seed: int = 0
    in_channels: int = 1  # 3 for CIFAR-10
    image_size: int = 28  # 32 for CIFAR-10


def make_model(setup: Setup) -> SpikingClassifier:
    """The chapter's STBP conv SNN (rate-coded input, hard reset, current readout)."""
    torch.manual_seed(setup.seed)
    return spiking_convnet(T=setup.T, channels=setup.channels, hidden=setup.hidden, encoding="rate",
                           in_channels=setup.in_channels, image_size=setup.image_size,
                           lif={"decay": setup.decay, "threshold": setup.threshold})


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


def pretrain(train: Data, test: Data, setup: Setup) -> tuple[SpikingClassifier, Any]:
    model = make_model(setup)
    hist = fit(model, train, test=test, epochs=setup.pretrain_epochs, lr=setup.lr, batch_size=setup.batch_size,
               device=setup.device, seed=setup.seed, desc="pretrain", show_progress=False)
    return model, hist


def _loss(activity: SpikeActivity | None, lam: float, admm: ADMM | None) -> Callable[[Tensor, Tensor], Tensor]:
    def loss(out: Tensor, y: Tensor) -> Tensor:
        value = nn.functional.cross_entropy(out, y)
        if activity is not None:
            rate = activity.penalty()
            value = value + lam * rate
        if admm is not None and torch.is_grad_enabled():
            value = value + admm.penalty()
        return value
    return loss


def compress(base: SpikingClassifier, train: Data, test: Data, setup: Setup, *, constraint: Constraint | None = None,
             method: str = "admm", activity: float = 0.0, count_inputs: Tensor | None = None,
             name: str = "") -> dict[str, Any]:
    """Compress a copy of ``base`` and measure it.

    ``method``: ``"admm"`` (ADMM epochs, then projection and constrained fine-tuning) or
    ``"oneshot"`` (projection of the pretrained weights, then the same fine-tuning with the
    same total epochs). ``activity``: λ of the spike-count penalty, in every phase. With
    ``constraint=None`` only the activity regulariser acts (same epochs)."""
    if method not in ("admm", "oneshot"):
        raise ValueError(f"method must be 'admm' or 'oneshot', got {method!r}")
    model = copy.deepcopy(base).to(setup.device)
    constraints = layer_constraints(model, constraint) if constraint is not None else {}
    residuals: list[dict[str, float]] = []
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
                fit(model, train, epochs=setup.admm_epochs, lr=setup.finetune_lr, loss_fn=_loss(act_ctx, activity, admm),
                    on_epoch=lambda e, rec: admm.update(), desc=f"{name} ADMM", **common)
                residuals = admm.residuals
            else:
                ft_epochs = total
            hard_project(model, constraints)
            acc_projected = evaluate(model, test, device=setup.device)["acc"]
            with constrained_finetuning(model, constraints):
                fit(model, train, epochs=ft_epochs, lr=setup.finetune_lr, loss_fn=_loss(act_ctx, activity, None),
                    desc=f"{name} fine-tune", **common)
    row: dict[str, Any] = {"strategy": name or (constraint.describe() if constraint else f"activity {activity:g}"),
                           "method": method if constraint is not None else "-", "sparsity": constraint.sparsity if constraint else None,
                           "bits": constraint.bits if constraint else None, "activity": activity,
                           "acc": evaluate(model, test, device=setup.device)["acc"],
                           "acc_after_projection": acc_projected if constraint is not None else None,
                           "constraint_holds": all(c.satisfied(compressible(model)[n].weight.detach()) for n, c in constraints.items()),
                           "admm_primal_residual": residuals[-1]["primal"] if residuals else None}
    metrics = compression_metrics(model, constraints, count_inputs, time_steps=setup.T)
    row.update({k: v for k, v in metrics.items() if k != "layers"})
    row["model"] = model
    return row


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


def joint_quantities(table: pd.DataFrame, base_acc: float, *, max_loss: float = 0.02) -> Measured:
    """Which kind of strategy compresses the model most at a small accuracy cost.

    Among the strategies whose test accuracy is within ``max_loss`` (2 points) of the
    uncompressed network's (judged on the point estimates: one run each), the largest
    model-size compression of a *joint* strategy (pruning and quantisation together),
    ``joint_best_compression``, and of a *single-technique* one (pruning, quantisation or the
    activity regulariser alone), ``single_best_compression``. The uncompressed network (1×)
    is the floor of both, so a kind with no strategy within 2 points counts 1×. Single runs.
    Without any joint strategy in ``table`` the joint quantity comes back as the reason."""
    within = table[table["acc"] >= base_acc - max_loss]
    joint = _is_joint(table)
    best = lambda rows: float(max([1.0] + [float(v) for v in rows["size_compression"]]))
    out: Measured = {"single_best_compression": Quantity.single("single_best_compression", best(within[~joint[within.index]]))}
    if not joint.any():
        out["joint_best_compression"] = "this profile ran no joint (pruning + quantisation) strategy"
    else:
        out["joint_best_compression"] = Quantity.single("joint_best_compression", best(within[joint[within.index]]))
    return out
