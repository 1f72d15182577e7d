"""Training the branches on synthetic sequences, tracking with each variant, measuring.

Both branches get the same training budget (:func:`tune_branches`): the same training
sequences, the same number of epochs and the same learning-rate trials, each branch's rate
chosen by its own loss on held-out validation sequences (the test sequences are never looked
at). The SNN branch starts from a threshold-scaled (LSUV-style) initialisation so that both of
its LIF layers fire on training events (:func:`compendium.spiking.init.threshold_scaled_init`;
at PyTorch's default initialisation its second layer is silent on these sparse inputs).

The chapter's claims read quantities with 95 % intervals built by :func:`tracking_quantities`
from :func:`evaluate_tracking`'s raw results."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from compendium.book.quantities import Quantity, difference
from compendium.learning import fit
from compendium.spiking.init import firing_rates, threshold_scaled_init
from compendium.tracking.fusion import attention_gate, tcf
from compendium.tracking.metrics import center_errors, ious, precision_curve, success_curve
from compendium.tracking.models import STRIDE, EventNet, FrameNet, response_loss, soft_argmax
from compendium.tracking.synthetic import Sequence

VARIANTS = ("ANN only", "SNN only", "hybrid: TCF", "hybrid: TCF + attention")
KEYS = {"ANN only": "ann", "SNN only": "snn", "hybrid: TCF": "tcf", "hybrid: TCF + attention": "att"}


def train_frame_net(seqs: list[Sequence], *, epochs: int = 3, width: int = 16, lr: float = 2e-3, batch: int = 64,
                    seed: int = 0, device: str = "cpu", show_progress: bool = True) -> tuple[FrameNet, list[float]]:
    """Every render of the training sequences is a training frame, as the APS camera would read
    it out there (blurred by its exposure; APS frames are a subset in time). PyTorch's default
    initialisation (the ReLU branch learns from it). Trained by :func:`compendium.learning.fit`
    (Adam, the response loss) on ``device``; returned on the CPU, where the tracker runs.
    Returns the net and its per-step training losses."""
    torch.manual_seed(seed)
    net = FrameNet(width)
    frames = torch.cat([s.camera for s in seqs])
    centers = torch.cat([s.centers for s in seqs])
    losses: list[float] = []
    fit(net, (frames, centers), epochs=epochs, lr=lr, batch_size=batch, loss_fn=response_loss, metric=None,
        device=device, seed=seed, desc="train ANN branch", show_progress=show_progress,
        on_step=lambda r: losses.append(r["loss"]))
    return net.cpu().eval(), losses


class _BatchMajor(nn.Module):
    """A time-major net (``[L, B, ...] -> [L, B, ...]``) seen batch-major, as
    :func:`compendium.learning.fit` batches along the first dimension."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.transpose(0, 1)).transpose(0, 1)


def _chunks(seqs: list[Sequence], length: int) -> tuple[Tensor, Tensor]:
    ev, ce = [], []
    for s in seqs:
        for i in range(0, s.events.shape[0] - length + 1, length):
            ev.append(s.events[i:i + length])
            ce.append(s.centers[i + 1:i + 1 + length])  # bin t ends at render t + 1
    return torch.stack(ev, 1), torch.stack(ce, 1)  # [L, B, 2, H, W], [L, B, 2]


def _init_sample(events: Tensor, count: int, seed: int) -> Tensor:
    """Up to ``count`` training chunks ``[L, count, 2, H, W]`` drawn without replacement (seeded)."""
    idx = torch.randperm(events.shape[1], generator=torch.Generator().manual_seed(seed + 1))[:count]
    return events[:, idx]


def new_event_net(seqs: list[Sequence], *, width: int = 16, chunk: int = 10, seed: int = 0, scaled_init: bool = True,
                  sample: int = 64) -> tuple[EventNet, dict[str, list[float]]]:
    """The SNN branch as training starts: PyTorch's default initialisation, then (``scaled_init``)
    every conv but the readout rescaled so that its output on ``sample`` training chunks has
    standard deviation equal to the LIF threshold (LSUV, Mishkin & Matas 2016, target V_th).
    Returns the net and the mean firing rate of each LIF layer on that sample before and after."""
    torch.manual_seed(seed)
    net = EventNet(width)
    events, _ = _chunks(seqs, chunk)
    x = _init_sample(events, sample, seed)
    before = firing_rates(net, x)
    if scaled_init:
        threshold_scaled_init(net, x, float(net.net[1].threshold))
    return net, {"default init": before, "as trained": firing_rates(net, x)}


def train_event_net(seqs: list[Sequence], *, epochs: int = 3, width: int = 16, chunk: int = 10, lr: float = 2e-3,
                    batch: int = 16, seed: int = 0, scaled_init: bool = True, device: str = "cpu",
                    show_progress: bool = True) -> tuple[EventNet, list[float]]:
    """BPTT over chunks of ``chunk`` event bins; loss at every bin; initialised by
    :func:`new_event_net`; trained by :func:`compendium.learning.fit` on ``device`` and returned
    on the CPU. Returns the net and its per-step training losses."""
    net, _ = new_event_net(seqs, width=width, chunk=chunk, seed=seed, scaled_init=scaled_init)
    events, centers = _chunks(seqs, chunk)
    losses: list[float] = []
    fit(_BatchMajor(net), (events.transpose(0, 1).contiguous(), centers.transpose(0, 1).contiguous()), epochs=epochs,
        lr=lr, batch_size=batch, loss_fn=response_loss, metric=None, device=device, seed=seed,
        desc="train SNN branch", show_progress=show_progress, on_step=lambda r: losses.append(r["loss"]))
    return net.cpu().eval(), losses


@torch.no_grad()
def frame_loss(net: FrameNet, seqs: list[Sequence], batch: int = 256) -> float:
    """Mean response loss of the ANN branch over every render's camera frame of ``seqs``."""
    frames = torch.cat([s.camera for s in seqs])
    centers = torch.cat([s.centers for s in seqs])
    total = sum(float(response_loss(net(f), c)) * len(f) for f, c in zip(frames.split(batch), centers.split(batch)))
    return total / len(frames)


@torch.no_grad()
def event_loss(net: EventNet, seqs: list[Sequence], chunk: int = 10, batch: int = 64) -> float:
    """Mean response loss of the SNN branch over every bin of ``seqs``' chunks (as in training)."""
    events, centers = _chunks(seqs, chunk)
    total = sum(float(response_loss(net(e), c)) * e.shape[1] for e, c in zip(events.split(batch, 1), centers.split(batch, 1)))
    return total / events.shape[1]


def tune_branches(train: list[Sequence], val: list[Sequence], *, lrs: tuple[float, ...] = (1e-3, 2e-3, 4e-3),
                  epochs: int = 5, width: int = 16, chunk: int = 10, seed: int = 0, device: str = "cpu",
                  show_progress: bool = True) -> tuple[FrameNet, EventNet, pd.DataFrame]:
    """The same training budget for both branches (the idea of
    :func:`compendium.learning.compare_tuned`): each branch is trained once per learning rate in
    ``lrs`` on ``train`` for ``epochs`` epochs from the same seed, and the trial with the lowest
    loss on the validation sequences ``val`` is kept. Returns both kept branches and the trials
    (branch, lr, validation loss, chosen)."""
    rows, best = [], {}
    for branch in ("ANN", "SNN"):
        for lr in lrs:
            if branch == "ANN":
                net, _ = train_frame_net(train, epochs=epochs, width=width, lr=lr, seed=seed, device=device,
                                         show_progress=show_progress)
                loss = frame_loss(net, val)
            else:
                net, _ = train_event_net(train, epochs=epochs, width=width, chunk=chunk, lr=lr, seed=seed,
                                         device=device, show_progress=show_progress)
                loss = event_loss(net, val, chunk)
            rows.append({"branch": branch, "lr": lr, "validation loss": loss})
            if branch not in best or loss < best[branch][0]:
                best[branch] = (loss, lr, net)
    trials = pd.DataFrame(rows)
    trials["chosen"] = [best[b][1] == lr for b, lr in zip(trials["branch"], trials["lr"])]
    return best["ANN"][2], best["SNN"][2], trials


def _gated(response: Tensor, center: np.ndarray, sigma: float) -> np.ndarray:
    """Soft-argmax of one response map ``[h, w]`` (logits) under a Gaussian window at ``center``."""
    gated = attention_gate(response.exp().unsqueeze(0), torch.tensor(center[None], dtype=response.dtype), sigma, STRIDE)
    return soft_argmax(gated.clamp_min(1e-30).log()).numpy()[0]


@torch.no_grad()
def track(seq: Sequence, ann: FrameNet, snn: EventNet, *, kappa: float = 0.8, sigma: float = 8.0) -> dict[str, np.ndarray]:
    """Positions ``[N+1, 2]`` at every render for each variant. The first APS frame initialises
    every tracker (as a tracker is given its first box).

    TCF + attention: at bin ``t`` both the SNN's current and previous response maps are read
    through the *same* Gaussian window, centred on the running estimate ``x̂[t-1]``, and their
    difference is the displacement the TCF adds,
    ``x̂[t] = x̂[t-1] + g(r[t], x̂[t-1]) - g(r[t-1], x̂[t-1])`` (then the APS correction).
    Reading both through one window means that when the SNN sees nothing (a still target) the
    displacement is zero; differencing readouts taken through two different windows would add
    the window's own last step every bin, i.e. coast at the last velocity."""
    a = soft_argmax(ann(seq.aps_frames())).numpy()  # [N_aps, 2]
    responses = snn(seq.events.unsqueeze(1)).squeeze(1)  # [N, h, w]
    s = np.concatenate([a[:1], soft_argmax(responses).numpy()])  # bin t -> render t + 1
    n = seq.frames.shape[0]
    held = a[np.minimum(np.arange(n) // seq.aps_every, len(a) - 1)]
    fused = tcf(a, s, seq.aps_every, kappa)
    att = np.empty((n, 2))
    att[0] = a[0]
    for t in range(1, n):
        now = _gated(responses[t - 1], att[t - 1], sigma)
        att[t] = now if t == 1 else att[t - 1] + (now - _gated(responses[t - 2], att[t - 1], sigma))
        if t % seq.aps_every == 0 and t // seq.aps_every < len(a):
            att[t] = (1 - kappa) * att[t] + kappa * a[t // seq.aps_every]
    return {"ANN only": held, "SNN only": s, "hybrid: TCF": fused, "hybrid: TCF + attention": att}


def evaluate_tracking(seqs: list[Sequence], ann: FrameNet, snn: EventNet, *, kappa: float = 0.8, sigma: float = 8.0,
                      thresholds: np.ndarray | None = None,
                      within_px: float = 5.0) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """Per-variant precision at ``within_px``, success AUC, mean centre error, pooled over all
    renders of all sequences; and the raw errors/overlaps for the plots, with, per test sequence
    in sequence order, its success AUC (``seq_auc``), its frames within ``within_px``
    (``seq_hits``) and its frame count (``seq_frames``), and its condition (``seq_condition``).
    Boxes take the target's true size (trackers here estimate position only)."""
    th = np.arange(0, 21) if thresholds is None else thresholds
    keys = ("err", "iou", "seq_auc", "seq_hits", "seq_frames", "seq_condition")
    pooled: dict[str, dict[str, list]] = {v: {k: [] for k in keys} for v in VARIANTS}
    for seq in seqs:
        paths = track(seq, ann, snn, kappa=kappa, sigma=sigma)
        truth = seq.centers.numpy()
        size = np.full((len(truth), 2), 2 * seq.radius)
        for v, p in paths.items():
            err = center_errors(p, truth)
            P = pooled[v]
            P["err"].append(err)
            P["iou"].append(ious(np.concatenate([p - seq.radius, size], 1), seq.boxes().numpy()))
            P["seq_auc"].append(success_curve(P["iou"][-1])[2])
            P["seq_hits"].append(int((err <= within_px).sum()))
            P["seq_frames"].append(len(err))
            P["seq_condition"].append(seq.condition)
    rows, raw = [], {}
    for v in VARIANTS:
        err, ov = np.concatenate(pooled[v]["err"]), np.concatenate(pooled[v]["iou"])
        _, _, auc = success_curve(ov)
        raw[v] = {"err": err, "iou": ov, "precision": precision_curve(err, th), "thresholds": th,
                  **{k: np.array(pooled[v][k]) for k in keys[2:]}}
        rows.append({"tracker": v, f"precision@{within_px:g}px": float((err <= within_px).mean()), "success AUC": auc,
                     "mean centre error (px)": float(err.mean())})
    return pd.DataFrame(rows), raw


def per_condition(raw: dict[str, dict[str, np.ndarray]]) -> pd.DataFrame:
    """Precision (frames within the threshold over all frames of the condition) and success AUC
    (mean of the condition's per-sequence AUCs) of every variant in every condition, and both
    over all conditions; a row per (condition, tracker)."""
    rows = []
    conds = list(dict.fromkeys(raw[VARIANTS[0]]["seq_condition"])) + ["all"]
    for c in conds:
        for v in VARIANTS:
            r = raw[v]
            m = np.ones(len(r["seq_auc"]), bool) if c == "all" else r["seq_condition"] == c
            rows.append({"condition": c, "tracker": v, "sequences": int(m.sum()),
                         "precision@5px": r["seq_hits"][m].sum() / r["seq_frames"][m].sum(),
                         "success AUC": float(r["seq_auc"][m].mean())})
    return pd.DataFrame(rows)


def tracking_quantities(raw: dict[str, dict[str, np.ndarray]], within_px: float = 5.0) -> list[Quantity]:
    """What the tracking claim reads, for each variant (``KEYS``: ann, snn, tcf, att):

    ``prec_<key>``
        precision at ``within_px``: the share of all test frames (renders of all test
        sequences) whose centre error is at most ``within_px``, a rate with Wilson's interval.
        Frames of one sequence are correlated, so this interval is narrower than one over
        independent frames would be.
    ``auc_<key>``
        success AUC, the mean over test sequences of each sequence's AUC with a t-interval;
        samples in sequence order, so the variants pair by sequence.
    """
    out = []
    for v, r in raw.items():
        key = KEYS[v]
        err = np.asarray(r["err"])
        out.append(Quantity.rate(f"prec_{key}", int((err <= within_px).sum()), len(err)))
        out.append(Quantity.from_samples(f"auc_{key}", r["seq_auc"]))
    return out


def detectable_effect(a: Quantity, b: Quantity, *, paired: bool = False, power: float = 0.8) -> float:
    """Smallest true difference ``a − b`` that a run like this one would declare above zero with
    probability ``power``: the half-width ``h`` of the 95 % interval of the difference
    (:func:`compendium.book.quantities.difference`, as the rule computes it) scaled to
    ``h · (z_0.975 + z_power) / z_0.975`` (normal approximation; for 80 % power, 1.43 h)."""
    from statistics import NormalDist

    d = difference(a, b, paired=paired)
    z = NormalDist().inv_cdf
    half = (d.high - d.low) / 2
    return float(half * (z(0.975) + z(power)) / z(0.975)) if math.isfinite(half) else float("nan")


@torch.no_grad()
def throughput(seq: Sequence, ann: FrameNet, snn: EventNet, repeats: int = 3) -> dict[str, float]:
    """Frames (ANN) and event bins (SNN) per second on this machine, batch 1, best of ``repeats``."""
    frames = seq.aps_frames()
    t_ann = t_snn = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for f in frames:
            ann(f.unsqueeze(0))
        t_ann = min(t_ann, (time.perf_counter() - t0) / len(frames))
        t0 = time.perf_counter()
        snn(seq.events.unsqueeze(1))
        t_snn = min(t_snn, (time.perf_counter() - t0) / seq.events.shape[0])
    hybrid = 1.0 / (t_snn + t_ann / seq.aps_every)  # one output per bin; one ANN frame per aps_every bins
    return {"ann_fps": 1.0 / t_ann, "snn_bins_per_s": 1.0 / t_snn, "hybrid_outputs_per_s": hybrid}
