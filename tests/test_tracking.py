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
