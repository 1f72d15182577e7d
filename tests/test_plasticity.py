"""Hybrid global-local plasticity: the layer against a hand-written reference, the modes, the
two-timescale optimiser, episodes and damage."""

import numpy as np
import pytest
import torch

from compendium.plasticity import HybridMLP, PlasticLIF, split_parameters, two_timescale_adam
from compendium.plasticity import experiment as X


def reference(layer: PlasticLIF, x: torch.Tensor):
    """The official update, transcribed literally (bmm form, batch mean)."""
    W, b = layer.linear.weight, layer.linear.bias
    P = layer.trace.clone()
    u = torch.zeros(x.shape[1], W.shape[0])
    o = torch.zeros_like(u)
    outs = []
    for t in range(x.shape[0]):
        I = x[t] @ W.T + b + layer.alpha * (x[t] @ P)
        u = layer.decay * (u - layer.threshold * o) + I
        o = (u > layer.threshold).float()
        hebb = torch.bmm((x[t] * layer.beta).unsqueeze(2), torch.tanh(u / layer.threshold - layer.eta).unsqueeze(1)).mean(0)
        P = torch.clamp(layer.trace_decay * P + hebb, -layer.clip, layer.clip)
        outs.append(o)
    return torch.stack(outs), P


def test_plastic_layer_matches_the_official_update():
    torch.manual_seed(0)
    layer = PlasticLIF(12, 7, "hp", alpha=0.5, beta=0.3)
    x = torch.rand(6, 5, 12)
    with torch.no_grad():
        ref_spikes, ref_trace = reference(layer, x)
        spikes = layer(x)
    assert torch.equal(spikes, ref_spikes)
    assert torch.allclose(layer.trace, ref_trace, atol=1e-6)
    # the trace persisted: a second call starts from it
    with torch.no_grad():
        ref2, _ = reference(layer, x)
        assert torch.equal(layer(x), ref2)


def test_per_sample_trace_equals_running_each_sample_alone():
    torch.manual_seed(1)
    layer = PlasticLIF(8, 3, "hp", persistent=False, per_sample=True, alpha=1.0, beta=0.5)
    solo = PlasticLIF(8, 3, "hp", persistent=False, alpha=1.0, beta=0.5)
    solo.load_state_dict(layer.state_dict())
    x, extra = torch.rand(5, 4, 8), torch.rand(5, 4, 3)
    with torch.no_grad():
        together, u = layer(x, extra=extra, return_membrane=True)
        for b in range(4):
            alone, u_b = solo(x[:, b:b + 1], extra=extra[:, b:b + 1], return_membrane=True)
            assert torch.equal(alone[:, 0], together[:, b])
            assert torch.allclose(u_b[0], u[b], atol=1e-6)
    with pytest.raises(ValueError):
        PlasticLIF(8, 3, per_sample=True, persistent=True)


def test_modes_decide_what_learns():
    gp, lp, hp = (HybridMLP((20, 16, 4), m, T=3) for m in ("gp", "lp", "hp"))
    assert float(gp.hidden.alpha) == 0 and not gp.hidden.alpha.requires_grad
    assert not lp.hidden.linear.weight.requires_grad and not lp.hidden.alpha.requires_grad
    assert lp.readout.weight.requires_grad
    glob, meta = split_parameters(hp)
    assert {id(p) for p in meta} == {id(hp.hidden.alpha), id(hp.hidden.beta), id(hp.hidden.eta)}
    assert id(hp.hidden.linear.weight) in {id(p) for p in glob}
    opt = two_timescale_adam(hp, meta_lr=1e-5)(None, 1e-3)
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-5]
    x = torch.rand(8, 20)
    with torch.no_grad():
        gp(x)
    assert gp.hidden.trace.abs().sum() == 0  # GP keeps no trace
    hp(x).sum().backward()
    assert hp.hidden.beta.grad.abs().sum() > 0 and hp.hidden.alpha.grad is not None  # gradient reaches the meta-parameters


def test_damage_zeroes_the_requested_fraction_and_leaves_the_original():
    m = HybridMLP((50, 40, 3), "gp", T=2)
    hit = X.damaged(m, 0.5, seed=0)
    frac = float((hit.hidden.linear.weight == 0).float().mean())
    assert 0.45 < frac < 0.55
    assert float((m.hidden.linear.weight == 0).float().mean()) < 0.01
    with pytest.raises(ValueError):
        X.damaged(m, 1.5)


def test_episodes_are_n_way_k_shot_with_unseen_queries():
    labels = torch.arange(10).repeat_interleave(6)
    images = torch.arange(60).float().reshape(60, 1, 1, 1)  # the image is its own index
    sx, sy, qx, qy = X.episodes(images, labels, np.arange(10), n_way=3, k_shot=2, n_episodes=20, seed=0)
    assert sx.shape == (20, 6, 1, 1, 1) and sy.shape == (20, 6) and qx.shape == (20, 1, 1, 1)
    for e in range(20):
        idx = sx[e].flatten().long()
        assert sorted(np.bincount(sy[e].numpy(), minlength=3).tolist()) == [2, 2, 2]
        for j in range(3):  # one class per episode label
            assert len(set(labels[idx[sy[e] == j]].tolist())) == 1
        q = int(qx[e].item())
        assert q not in idx.tolist()  # the query is not a support drawing
        assert labels[q] == labels[idx[sy[e] == qy[e]]][0]  # and has the class of its label
    train, held = X.split_classes(labels, 4)
    assert len(held) == 4 and not set(train) & set(held)


def test_hebbian_output_layer_can_bind_labels_without_meta_training():
    # hand-built features: each class is one orthogonal direction; HP with alpha=1 must answer
    # the query from the bound support label, GP cannot beat chance
    torch.manual_seed(0)
    net = X.FewShotNet(n_way=3, mode="hp", features=3, bind=1.0)
    net.features = torch.nn.Identity()
    with torch.no_grad():
        net.output.linear.weight.zero_()
        net.output.linear.bias.zero_()
    eye = torch.eye(3)
    order = torch.tensor([2, 0, 1])
    sx = eye[order].unsqueeze(0).repeat(30, 1, 1)  # [E, 3, 3]
    sy = torch.tensor([0, 1, 2]).repeat(30, 1)
    q_idx = torch.arange(30) % 3
    qx = eye[order[q_idx]]
    out = net(sx, sy, qx)
    assert (out.argmax(1) == q_idx).float().mean() == 1.0


def test_claim_quantities_pair_by_seed():
    import pandas as pd

    ft = pd.DataFrame([{"mode": m, "seed": s, "fraction": f, "acc_damaged": 0.5 + 0.1 * s + (m == "hp") * 0.05,
                        "acc_recovered": 0.6 + 0.1 * s} for m in ("gp", "lp", "hp") for s in (2, 0, 1) for f in (0.0, 0.5)])
    q = {x.name: x for x in X.fault_quantities(ft, 0.5)}
    assert set(q) == {f"ft_{c}_{m}" for c in ("damaged", "recovered") for m in ("gp", "lp", "hp")}
    assert q["ft_damaged_hp"].samples == pytest.approx((0.55, 0.65, 0.75))  # seed order 0, 1, 2
    assert q["ft_damaged_gp"].method == "t" and q["ft_damaged_gp"].n == 3
    with pytest.raises(ValueError, match="different seeds"):
        X.fault_quantities(ft[~((ft["mode"] == "lp") & (ft["seed"] == 2))], 0.5)
    mt = pd.DataFrame([{"mode": m, "seed": s, "after_task": a, "task": t, "acc": 0.9 - 0.1 * t + (m == "hp") * 0.01}
                       for m in ("gp", "hp") for s in (0, 1) for a in (0, 1) for t in range(a + 1)])
    q = {x.name: x for x in X.task_quantities(mt)}
    assert q["mt_gp"].samples == pytest.approx((0.85, 0.85)) and q["mt_hp"].estimate == pytest.approx(0.86)
