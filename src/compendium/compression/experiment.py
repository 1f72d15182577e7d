"""The compression chapter's pipeline: pretrain an STBP conv SNN, then for each strategy run
ADMM (or one-shot projection), hard-project, fine-tune under the constraint, and measure."""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from compendium.compression.activity import SpikeActivity
from compendium.compression.admm import ADMM, compressible, constrained_finetuning, hard_project
from compendium.compression.metrics import compression_metrics
from compendium.compression.projections import Constraint
from compendium.learning import evaluate, fit
from compendium.spiking.nets import SpikingClassifier, spiking_convnet

Data = tuple[Tensor, Tensor]


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
