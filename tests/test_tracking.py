"""Tracking: synthetic sequences, TCF limits, attention, metrics, response targets."""

import numpy as np
import pytest
import torch

from compendium.tracking import attention_gate, center_errors, ious, precision_curve, render_sequence, success_curve, tcf
from compendium.tracking.models import STRIDE, cell_targets, soft_argmax


def test_tcf_reduces_to_each_input_at_its_limits():
    rng = np.random.default_rng(0)
    n, every = 31, 10
    ann = rng.normal(size=(4, 2)) * 10
    snn = np.cumsum(rng.normal(size=(n, 2)), 0)
    # kappa = 1 and a motionless SNN: the ANN estimate held between frames
    held = tcf(ann, np.zeros((n, 2)), every, kappa=1.0)
    assert np.allclose(held, ann[np.minimum(np.arange(n) // every, 3)])
    # kappa = 0: the SNN trajectory, anchored at the first ANN estimate
    assert np.allclose(tcf(ann, snn, every, kappa=0.0), snn - snn[0] + ann[0])
    # in between, an APS frame pulls the estimate part of the way to the ANN
    mid = tcf(ann, snn, every, kappa=0.5)
    free = tcf(ann, snn, every, kappa=0.0)
    assert np.allclose(mid[10], 0.5 * free[10] + 0.5 * ann[1])
    with pytest.raises(ValueError):
        tcf(ann, snn, every, kappa=1.5)


def test_attention_gate_suppresses_responses_far_from_the_estimate():
    resp = torch.ones(1, 8, 8)
    gated = attention_gate(resp, torch.tensor([[2.0, 2.0]]), sigma=3.0, stride=STRIDE)
    assert gated[0, 0, 0] > 0.7 and gated[0, 7, 7] < 1e-10
    assert torch.all(gated <= resp)


def test_soft_argmax_and_cell_targets_agree_on_a_peaked_map():
    resp = torch.full((1, 16, 16), -50.0)
    resp[0, 5, 9] = 50.0  # row 5 (y), column 9 (x)
    pos = soft_argmax(resp)[0]
    assert torch.allclose(pos, torch.tensor([9.5 * STRIDE, 5.5 * STRIDE]))
    assert int(cell_targets(pos.unsqueeze(0), 16, 16)) == 5 * 16 + 9


def test_iou_precision_and_success_by_hand():
    boxes = np.array([[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 2, 2]], float)
    shifted = np.array([[0, 0, 2, 2], [1, 0, 2, 2], [5, 5, 2, 2]], float)
    assert np.allclose(ious(shifted, boxes), [1.0, 1 / 3, 0.0])
    err = center_errors(shifted[:, :2], boxes[:, :2])
    assert np.allclose(err, [0, 1, np.hypot(5, 5)])
    assert np.allclose(precision_curve(err, np.array([0, 1, 10])), [1 / 3, 2 / 3, 1])
    th, rates, auc = success_curve(np.array([1.0, 1 / 3, 0.0]), np.array([0.0, 0.5]))
    assert np.allclose(rates, [2 / 3, 1 / 3]) and auc == pytest.approx(0.5)


def test_synthetic_sequence_moves_at_the_requested_speed_with_events_on_the_target():
    seq = render_sequence(100, 48, speed=2.0, radius=5.0, clutter=0.0, seed=3)
    steps = np.linalg.norm(np.diff(seq.centers.numpy(), axis=0), axis=1)
    assert np.allclose(steps[steps > 1.99], 2.0, atol=1e-4) and (steps > 1.99).mean() > 0.8  # (less only when bouncing)
    assert seq.events.shape == (100, 2, 48, 48) and torch.all((seq.events == 0) | (seq.events == 1))
    assert (seq.centers >= 5).all() and (seq.centers <= 48 - 5).all()
    # with a flat background every event lies within reach of the moving disk
    ys, xs = torch.nonzero(seq.events[10].sum(0), as_tuple=True)
    d = torch.hypot(xs - seq.centers[10:12, 0].mean(), ys - seq.centers[10:12, 1].mean())
    assert len(d) > 0 and float(d.max()) <= 5.0 + 2.0 + 2.0
    assert list(seq.aps_index[:3]) == [0, 10, 20]
    still = render_sequence(20, 32, speed=1e-6, clutter=0.3, seed=0)
    assert still.events.sum() == 0  # a static scene emits nothing


def test_tracking_quantities_rates_over_frames_and_auc_per_sequence():
    from compendium.tracking.experiment import VARIANTS, tracking_quantities

    raw = {v: {"err": np.array([0.0, 3.0, 6.0, 9.0]), "seq_auc": np.array([0.5, 0.7])} for v in VARIANTS}
    q = {x.name: x for x in tracking_quantities(raw)}
    assert set(q) == {f"{m}_{k}" for m in ("prec", "auc") for k in ("ann", "snn", "tcf", "att")}
    assert q["prec_att"].method == "wilson" and q["prec_att"].estimate == 0.5 and q["prec_att"].n == 4
    assert q["auc_snn"].method == "t" and q["auc_snn"].samples == (0.5, 0.7) and q["auc_snn"].estimate == pytest.approx(0.6)


def test_exposure_frames_average_the_last_renders():
    from compendium.tracking.synthetic import exposure_frames

    frames = torch.arange(5, dtype=torch.float32).view(5, 1, 1).expand(5, 2, 2).contiguous()
    out = exposure_frames(frames, 3)
    assert torch.allclose(out[:, 0, 0], torch.tensor([0.0, 0.5, 1.0, 2.0, 3.0]))
    assert exposure_frames(frames, 1) is frames
    with pytest.raises(ValueError):
        exposure_frames(frames, 0)


def test_stop_and_go_alternates_moving_and_still_stretches():
    from compendium.tracking.synthetic import stop_and_go

    v = stop_and_go(300, 0.7, np.random.default_rng(0), move=(10, 20), still=(20, 30))
    assert v.shape == (301,) and set(np.unique(v)) == {0.0, 0.7}
    runs = np.split(v, np.flatnonzero(np.diff(v)) + 1)[1:-1]  # whole stretches (first and last may be cut)
    assert all(10 <= len(r) <= 20 if r[0] > 0 else 20 <= len(r) <= 30 for r in runs)


def test_conditions_give_each_branch_its_failure_mode():
    """fast: the target outruns the held frame and blurs it; stop-and-go: a still target emits
    no events; camera pan: the background's events are dense everywhere."""
    from compendium.tracking.synthetic import conditions, make_benchmark, stop_and_go

    names = [c.name for c in conditions()]
    assert names == ["fast", "stop-and-go", "camera pan"]
    seqs = make_benchmark(2, 40, 32, seed=0, aps_every=10, exposure=3, occlusion_rate=0.0)
    assert [s.condition for s in seqs] == [n for n in names for _ in range(2)]
    density = {n: np.mean([float(s.events.mean()) for s in seqs if s.condition == n]) for n in names}
    assert density["camera pan"] > 3 * density["fast"]
    fast = seqs[0]
    assert fast.aps_frames().shape == (5, 32, 32) and not torch.equal(fast.camera, fast.frames)  # blurred readout
    # a target that stands still over a static background emits nothing while it stands
    speeds = stop_and_go(60, 1.0, np.random.default_rng(1), move=(10, 10), still=(25, 25))
    seq = render_sequence(60, 32, speed=speeds, clutter=0.3, seed=2)
    still = np.flatnonzero(speeds[:-1] == 0)
    still = still[(still > 0) & (speeds[still - 1] == 0)]  # bins whose both renders are still
    assert len(still) > 10 and float(seq.events[still].sum()) == 0.0
    assert float(seq.events.sum()) > 0
    # a panning camera makes the background fire even with a still target
    pan = render_sequence(20, 32, speed=0.0, clutter=0.4, camera_speed=1.5, seed=3)
    assert float(pan.events.mean()) > 0.05


def test_event_branch_fires_at_initialisation():
    from compendium.tracking.experiment import new_event_net
    from compendium.tracking.synthetic import make_benchmark

    seqs = make_benchmark(1, 20, 64, seed=0, aps_every=10, threshold=0.15, noise=0.003, exposure=3)
    _, rates = new_event_net(seqs, width=16, chunk=10, seed=0)
    assert len(rates["as trained"]) == 2 and min(rates["as trained"]) > 0.01
    assert rates["default init"][1] < 0.01  # why the scaled initialisation is needed: layer 2 is (nearly) silent


class _Const(torch.nn.Module):
    """A stand-in branch returning given response maps (frames: one map for every frame; events: a map per bin)."""

    def __init__(self, maps):
        super().__init__()
        self.maps = maps

    def forward(self, x):
        if x.ndim == 3:  # frames [B, H, W]
            return self.maps.expand(x.shape[0], *self.maps.shape[-2:])
        return self.maps[: x.shape[0]].unsqueeze(1)  # events [T, 1, 2, H, W] -> [T, 1, h, w]


def test_attention_tracker_stays_put_when_the_events_stop():
    from compendium.tracking.experiment import track

    seq = render_sequence(30, 64, speed=0.0, clutter=0.0, aps_every=10, seed=0)
    peak = torch.full((16, 16), -20.0)
    peak[6, 6] = 20.0  # the target's cell: (26, 26) px
    ann = _Const(peak.unsqueeze(0))
    moving = torch.full((30, 16, 16), -20.0)
    for t in range(5):  # the SNN sees the target move one cell per bin, then nothing at all
        moving[t, 6, 6 + t] = 20.0
    moving[5:] = 0.0
    paths = track(seq, ann, _Const(moving), kappa=0.8, sigma=8.0)
    att = paths["hybrid: TCF + attention"]
    assert np.allclose(att[5, 0] - att[1, 0], 4 * STRIDE, atol=0.5)  # it followed the events
    assert np.allclose(att[6:10], att[6], atol=1e-3)  # and then it holds: no coasting without events
    assert np.allclose(att[10], 0.2 * att[9] + 0.8 * np.array([26.0, 26.0]), atol=1e-3)  # the APS correction


def test_per_condition_table_and_detectable_effect():
    from compendium.book.quantities import Quantity
    from compendium.tracking.experiment import VARIANTS, detectable_effect, per_condition

    raw = {v: {"seq_auc": np.array([0.2, 0.4, 0.6, 0.8]), "seq_hits": np.array([1, 3, 5, 7]),
               "seq_frames": np.array([10, 10, 10, 10]), "seq_condition": np.array(["a", "a", "b", "b"])}
           for v in VARIANTS}
    t = per_condition(raw).set_index(["condition", "tracker"])
    assert t.loc[("a", "SNN only"), "precision@5px"] == pytest.approx(0.2)
    assert t.loc[("b", "ANN only"), "success AUC"] == pytest.approx(0.7)
    assert t.loc[("all", "hybrid: TCF"), "sequences"] == 4
    a = Quantity.from_samples("a", [1.0, 2.0, 3.0, 4.0])
    b = Quantity.from_samples("b", [0.5, 1.0, 2.0, 3.5])
    d = np.array([0.5, 1.0, 1.0, 0.5])
    half = 3.182446 * d.std(ddof=1) / 2  # t_{0.975, 3} · s / sqrt(4)
    assert detectable_effect(a, b, paired=True) == pytest.approx(half * (1.959964 + 0.841621) / 1.959964, rel=1e-4)


@pytest.mark.parametrize("branch", ["ANN", "SNN"])
def test_branch_training_runs_through_fit_and_stops_on_a_nan_loss(branch, monkeypatch):
    """Both tracking branches train through compendium.learning.fit: one loss per step comes back,
    and a NaN in the inputs stops training with TrainingDiverged naming the branch."""
    from compendium.learning.train import TrainingDiverged
    from compendium.tracking import experiment as X
    from compendium.tracking.synthetic import make_benchmark

    seqs = make_benchmark(1, 20, 32, seed=0, aps_every=10, exposure=3)
    train = X.train_frame_net if branch == "ANN" else X.train_event_net
    net, losses = train(seqs, epochs=2, width=4, seed=0, show_progress=False)
    assert len(losses) >= 2 and all(np.isfinite(losses)) and not net.training
    # (NaN events would only silence the LIF layers: the loss itself is made to diverge)
    monkeypatch.setattr(X, "response_loss", lambda out, centers: out.sum() * float("nan"))
    with pytest.raises(TrainingDiverged, match=f"train {branch} branch"):
        train(seqs, epochs=1, width=4, seed=0, show_progress=False)
