"""Training the branches on synthetic sequences, tracking with each variant, measuring.

The chapter's claims read quantities with 95 % intervals built by :func:`tracking_quantities`
from :func:`evaluate_tracking`'s raw results."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from compendium.book.quantities import Quantity
from compendium.progress import progress
from compendium.tracking.fusion import attention_gate, tcf
from compendium.tracking.metrics import center_errors, ious, precision_curve, success_curve
from compendium.tracking.models import STRIDE, EventNet, FrameNet, response_loss, soft_argmax
from compendium.tracking.synthetic import Sequence

VARIANTS = ("ANN only", "SNN only", "hybrid: TCF", "hybrid: TCF + attention")
KEYS = {"ANN only": "ann", "SNN only": "snn", "hybrid: TCF": "tcf", "hybrid: TCF + attention": "att"}


def train_frame_net(seqs: list[Sequence], *, epochs: int = 3, width: int = 16, lr: float = 2e-3, batch: int = 64,
                    seed: int = 0, show_progress: bool = True) -> tuple[FrameNet, list[float]]:
    """Every render of the training sequences is a training frame (APS frames are a subset in time)."""
    torch.manual_seed(seed)
    net = FrameNet(width)
    frames = torch.cat([s.frames for s in seqs])
    centers = torch.cat([s.centers for s in seqs])
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    g = torch.Generator().manual_seed(seed)
    for _ in progress(range(epochs), desc="train ANN branch", enabled=show_progress):
        for idx in torch.randperm(len(frames), generator=g).split(batch):
            loss = response_loss(net(frames[idx]), centers[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    return net.eval(), losses


def _chunks(seqs: list[Sequence], length: int) -> tuple[Tensor, Tensor]:
    ev, ce = [], []
    for s in seqs:
        for i in range(0, s.events.shape[0] - length + 1, length):
            ev.append(s.events[i:i + length])
            ce.append(s.centers[i + 1:i + 1 + length])  # bin t ends at render t + 1
    return torch.stack(ev, 1), torch.stack(ce, 1)  # [L, B, 2, H, W], [L, B, 2]


def train_event_net(seqs: list[Sequence], *, epochs: int = 3, width: int = 16, chunk: int = 10, lr: float = 2e-3,
                    batch: int = 16, seed: int = 0, show_progress: bool = True) -> tuple[EventNet, list[float]]:
    """BPTT over chunks of ``chunk`` event bins; loss at every bin."""
    torch.manual_seed(seed)
    net = EventNet(width)
    events, centers = _chunks(seqs, chunk)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    g = torch.Generator().manual_seed(seed)
    for _ in progress(range(epochs), desc="train SNN branch", enabled=show_progress):
        for idx in torch.randperm(events.shape[1], generator=g).split(batch):
            loss = response_loss(net(events[:, idx]), centers[:, idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    return net.eval(), losses


@torch.no_grad()
def track(seq: Sequence, ann: FrameNet, snn: EventNet, *, kappa: float = 0.8, sigma: float = 8.0) -> dict[str, np.ndarray]:
    """Positions ``[N+1, 2]`` at every render for each variant. The first APS frame initialises
    every tracker (as a tracker is given its first box)."""
    aps = seq.aps_index
    a = soft_argmax(ann(seq.frames[aps])).numpy()  # [N_aps, 2]
    responses = snn(seq.events.unsqueeze(1)).squeeze(1)  # [N, h, w]
    s = np.concatenate([a[:1], soft_argmax(responses).numpy()])  # bin t -> render t + 1
    n = seq.frames.shape[0]
    held = a[np.minimum(np.arange(n) // seq.aps_every, len(a) - 1)]
    fused = tcf(a, s, seq.aps_every, kappa)
    # attention: gate each bin's response around the running fused estimate, then the same TCF step
    att = np.empty((n, 2))
    att[0] = a[0]
    s_prev = a[0]
    for t in range(1, n):
        gated = attention_gate(responses[t - 1:t].exp(), torch.tensor(att[t - 1:t], dtype=responses.dtype), sigma, STRIDE)
        s_t = soft_argmax(gated.clamp_min(1e-30).log()).numpy()[0]
        att[t] = att[t - 1] + (s_t - s_prev) if t > 1 else s_t
        s_prev = s_t
        if t % seq.aps_every == 0 and t // seq.aps_every < len(a):
            att[t] = (1 - kappa) * att[t] + kappa * a[t // seq.aps_every]
    return {"ANN only": held, "SNN only": s, "hybrid: TCF": fused, "hybrid: TCF + attention": att}


def evaluate_tracking(seqs: list[Sequence], ann: FrameNet, snn: EventNet, *, kappa: float = 0.8, sigma: float = 8.0,
                      thresholds: np.ndarray | None = None) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """Per-variant precision at 5 px, success AUC, mean centre error, pooled over all renders
    of all sequences; and the raw errors/overlaps for the plots, with each test sequence's
    success AUC (``seq_auc``, in sequence order). Boxes take the target's true size (trackers
    here estimate position only)."""
    th = np.arange(0, 21) if thresholds is None else thresholds
    pooled: dict[str, dict[str, list]] = {v: {"err": [], "iou": [], "seq_auc": []} for v in VARIANTS}
    for seq in seqs:
        paths = track(seq, ann, snn, kappa=kappa, sigma=sigma)
        truth = seq.centers.numpy()
        size = np.full((len(truth), 2), 2 * seq.radius)
        for v, p in paths.items():
            pooled[v]["err"].append(center_errors(p, truth))
            pooled[v]["iou"].append(ious(np.concatenate([p - seq.radius, size], 1), seq.boxes().numpy()))
            pooled[v]["seq_auc"].append(success_curve(pooled[v]["iou"][-1])[2])
    rows, raw = [], {}
    for v in VARIANTS:
        err, ov = np.concatenate(pooled[v]["err"]), np.concatenate(pooled[v]["iou"])
        _, _, auc = success_curve(ov)
        raw[v] = {"err": err, "iou": ov, "precision": precision_curve(err, th), "thresholds": th,
                  "seq_auc": np.array(pooled[v]["seq_auc"])}
        rows.append({"tracker": v, "precision@5px": float((err <= 5).mean()), "success AUC": auc,
                     "mean centre error (px)": float(err.mean())})
    return pd.DataFrame(rows), raw


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


@torch.no_grad()
def throughput(seq: Sequence, ann: FrameNet, snn: EventNet, repeats: int = 3) -> dict[str, float]:
    """Frames (ANN) and event bins (SNN) per second on this machine, batch 1, best of ``repeats``."""
    frames = seq.frames[seq.aps_index]
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
