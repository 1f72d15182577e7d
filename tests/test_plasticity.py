"""Hybrid global-local plasticity: the layer against a hand-written reference (both its paths),
the modes, the two-timescale optimiser, firing at initialisation, equal tuning trials, episodes,
the prototype baseline and damage."""

import numpy as np
import pandas as pd
import pytest
import torch

from compendium.learning import choose_rate
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


def _episodes_one_by_one(images, labels, classes, n_way, k_shot, n_episodes, seed):
    """The plainly written sampler: each episode drawn and its images indexed in turn."""
    rng = np.random.default_rng(seed)
    by_class = {int(c): np.flatnonzero(labels.numpy() == c) for c in classes}
    sx, sy, qx, qy = [], [], [], []
    for _ in range(n_episodes):
        chosen = rng.choice(classes, size=n_way, replace=False)
        items, tags = [], []
        for j, c in enumerate(chosen):
            items += list(rng.choice(by_class[int(c)], size=k_shot, replace=False))
            tags += [j] * k_shot
        order = rng.permutation(len(items))
        target = int(rng.integers(n_way))
        q_pick = rng.choice([i for i in by_class[int(chosen[target])] if i not in items], size=1)[0]
        sx.append(images[np.array(items)[order]])
        sy.append(torch.tensor(np.array(tags)[order]))
        qx.append(images[q_pick])
        qy.append(target)
    return torch.stack(sx), torch.stack(sy), torch.stack(qx), torch.tensor(qy)


@pytest.mark.parametrize("n_way, k_shot, seed", [(5, 1, 0), (3, 2, 7), (4, 3, 1)])
def test_episodes_are_those_drawn_one_at_a_time(n_way, k_shot, seed):
    labels = torch.arange(12).repeat_interleave(8)
    images = torch.randn(96, 1, 3, 3, generator=torch.Generator().manual_seed(seed))
    classes = np.arange(1, 12)
    got = X.episodes(images, labels, classes, n_way=n_way, k_shot=k_shot, n_episodes=40, seed=seed)
    want = _episodes_one_by_one(images, labels, classes, n_way, k_shot, 40, seed)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape and g.is_contiguous()
        assert torch.equal(g, w)


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


def _grads(layer):
    return [p.grad.clone() for p in layer.parameters() if p.grad is not None]


@pytest.mark.parametrize("persistent", [True, False])
def test_constant_input_path_matches_the_step_loop(persistent):
    # direct coding repeats one input over T steps (a broadcast view): the layer then takes the
    # Gram-matrix recurrence; it must agree with the general loop (values, final trace, gradients)
    torch.manual_seed(2)
    fast = PlasticLIF(30, 20, "hp", persistent=persistent, alpha=0.5, beta=0.05)
    slow = PlasticLIF(30, 20, "hp", persistent=persistent, alpha=0.5, beta=0.05)
    slow.load_state_dict(fast.state_dict())
    if persistent:
        fast.trace.uniform_(-1, 1)
        slow.trace.copy_(fast.trace)
    x0 = torch.rand(16, 30)
    x_view = x0.unsqueeze(0).expand(6, 16, 30)
    assert x_view.stride(0) == 0 and fast._clip_cannot_bind(x0, 6)
    o_f, u_f = fast(x_view, return_membrane=True)
    o_s, u_s = slow(x_view.contiguous(), return_membrane=True)  # a copy: the general loop
    assert torch.equal(o_f, o_s)
    assert torch.allclose(u_f, u_s, atol=1e-5)
    assert torch.allclose(fast.trace, slow.trace, atol=1e-6)
    (o_f.sum() + u_f.pow(2).sum()).backward()
    (o_s.sum() + u_s.pow(2).sum()).backward()
    for g_f, g_s in zip(_grads(fast), _grads(slow)):
        assert torch.allclose(g_f, g_s, rtol=1e-4, atol=1e-5 * float(g_s.abs().max()))
    # and the official update agrees with the fast path too
    ref = PlasticLIF(30, 20, "hp", persistent=True, alpha=0.5, beta=0.05)
    ref.load_state_dict(fast.state_dict())
    with torch.no_grad():
        ref_spikes, ref_trace = reference(ref, x_view)
        assert torch.equal(ref(x_view), ref_spikes)
        assert torch.allclose(ref.trace, ref_trace, atol=1e-6)


@pytest.mark.parametrize("shape, batch", [((784, 256), 100), ((16, 12, 5), 1), ((37, 3), 7)])
@pytest.mark.parametrize("needs", [(True, True), (False, True), (True, False)])
def test_trace_update_kernel_equals_the_eager_operations(shape, batch, needs, monkeypatch):
    """The compiled trace step gives clamp(λ P + H / B, -c, c) and its gradients bit for bit,
    including elements that land exactly on the clip (the clamp passes their gradient) and NaN."""
    from compendium.plasticity.hybrid import trace_update
    from compendium.spiking import native

    if native.library() is None:
        pytest.skip("no C compiler: the eager operations run")
    g = torch.Generator().manual_seed(5)
    trace0, hebb0, grad = torch.randn(shape, generator=g) * 3, torch.randn(shape, generator=g) * 3 * batch, \
        torch.randn(shape, generator=g)
    flat_t, flat_h = trace0.view(-1), hebb0.view(-1)
    flat_t[:3], flat_h[:3] = 0.0, torch.tensor([4.0, -4.0, 4.0001]) * batch  # on the clip, on it, just past it
    flat_h[3] = float("nan")

    def run(use_native: bool):
        with monkeypatch.context() as m:
            if not use_native:
                m.setattr(native, "supports_trace_update", lambda *t: False)
            trace, hebb = trace0.clone().requires_grad_(needs[0]), hebb0.clone().requires_grad_(needs[1])
            out = trace_update(trace, hebb, 0.99, batch, 4.0)
            assert (type(out.grad_fn).__name__ == "_TraceUpdateBackward") == use_native
            out.backward(grad)
            return out.detach(), trace.grad, hebb.grad

    fused, eager = run(True), run(False)
    for a, b in zip(fused, eager):
        assert (a is None) == (b is None)
        if a is not None:  # the same bits (a NaN's payload and the sign of a zero included)
            assert torch.equal(a.view(torch.int32), b.view(torch.int32))
    out = fused[0].view(-1)
    assert out[0] == 4.0 and out[1] == -4.0 and out[2] == 4.0 and out[3].isnan()
    if needs[1]:  # the gradient passes on the clip, not past it
        gh, gv = fused[2].view(-1), grad.view(-1)
        assert gh[0] == gv[0] / batch and gh[1] == gv[1] / batch and gh[2] == 0.0


@pytest.mark.parametrize("per_sample", [False, True])
def test_plastic_layer_with_the_trace_kernel_equals_it_without(per_sample, monkeypatch):
    """The general loop (the clip binds, so the Gram-matrix path is not taken) gives the same
    spikes, membrane, persistent trace and gradients bit for bit with and without the kernel."""
    from compendium.spiking import native

    if native.library() is None:
        pytest.skip("no C compiler: the eager operations run")
    assert not native.supports_trace_update(torch.zeros(3, 4).t())  # not dense
    assert not native.supports_trace_update(torch.zeros(3, 4, dtype=torch.float64))
    assert not native.supports_trace_update(torch.zeros(3, 4), torch.zeros(4, 3))
    g = torch.Generator().manual_seed(6)
    x, extra = torch.rand(6, 10, 20, generator=g), torch.rand(6, 10, 5, generator=g)  # B = 10: a division that rounds

    def run(use_native: bool):
        with monkeypatch.context() as m:
            if not use_native:
                m.setattr(native, "supports_trace_update", lambda *t: False)
            torch.manual_seed(3)
            layer = PlasticLIF(20, 5, "hp", alpha=0.5, beta=1.0, persistent=not per_sample, per_sample=per_sample)
            if not per_sample:
                layer.trace.uniform_(-4.0, 4.0, generator=g.manual_seed(7))
                assert not layer._clip_cannot_bind(x[0], 6)
            o, u = layer(x, extra=extra, return_membrane=True)
            (o.sum() + u.pow(2).sum()).backward()
            return [o, u, layer.trace, *[p.grad for p in layer.parameters() if p.requires_grad]]

    for a, b in zip(run(True), run(False)):
        assert torch.equal(a.detach().view(torch.int32), b.detach().view(torch.int32))


def test_constant_input_path_is_not_taken_when_the_clip_can_bind():
    layer = PlasticLIF(10, 4, "hp", beta=1.0)
    x0 = torch.ones(3, 10)
    assert not layer._clip_cannot_bind(x0, 5)  # 5 steps of increments up to 1 can reach the clip at 4
    assert PlasticLIF(10, 4, "hp", beta=0.01)._clip_cannot_bind(x0, 5)
    with torch.no_grad():
        spikes, trace = reference(layer, x0.unsqueeze(0).expand(5, 3, 10))
        assert torch.equal(layer(x0.unsqueeze(0).expand(5, 3, 10)), spikes)
        assert torch.allclose(layer.trace, trace, atol=1e-6)
        assert float(layer.trace.abs().max()) == pytest.approx(4.0)  # the clip did bind


@pytest.mark.parametrize("hidden", [256, 512])
def test_every_variant_fires_at_initialisation_in_the_default_settings(hidden):
    # MNIST-like inputs: about a fifth of the pixels lit, values in [0, 1]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 1, 28, 28, generator=g) * (torch.rand(200, 1, 28, 28, generator=g) < 0.2)
    setup = X.Setup(hidden=hidden)
    rates = X.init_firing_rates(("gp", "lp", "hp"), x, setup)
    assert set(rates) == {"gp", "lp", "hp"}
    for mode, r in rates.items():
        assert 0.01 < r < 0.99, f"{mode} hidden layer fires at rate {r} at initialisation"
    # the check leaves a persistent trace as it found it
    m = HybridMLP((784, 16, 10), "hp", T=3)
    from compendium.plasticity import firing_rates
    firing_rates(m, x[:10])
    assert m.hidden.trace.abs().sum() == 0


def test_setup_with_lr_keeps_the_meta_local_ratio():
    s = X.Setup(lr=1e-3, meta_lr=5e-4).with_lr(3e-3)
    assert s.lr == pytest.approx(3e-3) and s.meta_lr == pytest.approx(1.5e-3)


def _toy_images(n=240, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = 0.1 * torch.rand(n, 1, 6, 6, generator=g)
    for c in range(3):
        x[y == c, 0, 2 * c:2 * c + 2] += 0.9  # each class lights its own rows
    return x, y


def test_mlp_tuning_gives_every_mode_the_same_trials_and_trains_the_chosen_rates():
    x, y = _toy_images()
    setup = X.Setup(hidden=16, T=2, epochs=1, batch_size=20)
    trials, chosen = X.tune_mlp_lr(("gp", "hp"), (x, y), setup, (1e-3, 1e-2), [0, 1], tune_epochs=1, in_features=36)
    assert sorted(trials["mode"].unique()) == ["gp", "hp"] and sorted(trials["seed"].unique()) == [0, 1]
    assert set(chosen) == {("gp", 0), ("gp", 1), ("hp", 0), ("hp", 1)}
    for (mode, seed), sub in trials.groupby(["mode", "seed"]):
        assert sorted(sub["lr"]) == [1e-3, 1e-2]
        best = sub.sort_values(["val_acc", "lr"], ascending=[False, True]).iloc[0]["lr"]
        assert chosen[(mode, seed)] == best
    _, single = X.tune_mlp_lr(("gp", "lp"), (x, y), setup, (5e-3,), [0, 3], tune_epochs=1, in_features=36)
    assert single == {("gp", 0): 5e-3, ("gp", 3): 5e-3, ("lp", 0): 5e-3, ("lp", 3): 5e-3}
    models, acc = X.train_modes(("gp", "hp"), (x, y), (x[:60], y[:60]), setup, chosen, [0, 1], in_features=36)
    assert set(models) == {("gp", 0), ("gp", 1), ("hp", 0), ("hp", 1)}
    assert {(r.mode, r.seed): r.lr for r in acc.itertuples()} == chosen
    q = {v.name: v for v in X.accuracy_quantities(acc, "toy_")}
    assert q["toy_gp"].n == 2 and q["toy_gp"].samples == tuple(acc[acc["mode"] == "gp"].sort_values("seed")["test_acc"])
    with pytest.raises(ValueError, match=r"\('hp', 2\)"):
        X.train_modes(("hp",), (x, y), (x, y), setup, chosen, [0, 2], in_features=36)


def test_each_seed_tunes_on_its_own_split_and_a_shared_choice_is_the_first_seeds(monkeypatch):
    x, y = _toy_images()
    setup = X.Setup(hidden=16, T=2, epochs=1, batch_size=20)
    lrs = (1e-3, 1e-2)
    calls = {"split": [], "init": []}
    real_split, real_train = X.validation_split, X.train_mlp
    monkeypatch.setattr(X, "validation_split", lambda d, f, seed: (calls["split"].append(seed), real_split(d, f, seed))[1])
    monkeypatch.setattr(X, "train_mlp", lambda *a, seed, **k: (calls["init"].append(seed), real_train(*a, seed=seed, **k))[1])
    own, _ = X.tune_mlp_lr(("gp", "hp"), (x, y), setup, lrs, [3, 1], tune_epochs=1, in_features=36)
    # seed s draws split s and initialises every trial from s (2 modes x 2 rates per seed)
    assert calls == {"split": [3, 1], "init": [3] * 4 + [1] * 4}
    alone, _ = X.tune_mlp_lr(("gp", "hp"), (x, y), setup, lrs, [1], tune_epochs=1, in_features=36)
    # seed 1's trials are those of a tuning run on seed 1 alone
    assert own[own["seed"] == 1]["val_acc"].tolist() == alone["val_acc"].tolist()
    calls["split"].clear(), calls["init"].clear()
    shared_trials, shared = X.tune_mlp_lr(("gp",), (x, y), setup, lrs, [1, 0], tune_epochs=1, per_seed=False,
                                          in_features=36)
    assert calls == {"split": [1], "init": [1, 1]}  # only the first seed tunes
    assert shared_trials["seed"].unique().tolist() == [1]
    first = alone[alone["mode"] == "gp"]
    assert shared == {("gp", 1): choose_rate(zip(first["lr"], first["val_acc"])), ("gp", 0): shared[("gp", 1)]}
    with pytest.raises(ValueError, match="at least one seed"):
        X.tune_mlp_lr(("gp",), (x, y), setup, lrs, [], tune_epochs=1, in_features=36)


def test_choice_table_counts_the_seeds_behind_each_rate():
    trials = pd.DataFrame({"mode": ["gp"] * 4, "seed": [0, 0, 1, 1], "lr": [1e-3, 1e-2] * 2,
                           "val_acc": [0.5, 0.75, 0.75, 0.5]})
    table = X.choice_table(trials, {("gp", 0): 1e-2, ("gp", 1): 1e-3})
    assert table.loc[1e-3, "gp"] == "0.6250 (chosen by 1 of 2)" and table.loc[1e-2, "gp"] == "0.6250 (chosen by 1 of 2)"
    table = X.choice_table(trials[trials["seed"] == 0], {("gp", 0): 1e-2, ("gp", 1): 1e-2})
    assert table.loc[1e-3, "gp"] == "0.5000" and table.loc[1e-2, "gp"] == "0.7500 (chosen by 1 of 1)"


def test_prototypes_take_the_nearest_class_mean():
    # identity features; class j's support drawings sit around e_j, the query near e_target
    feats = torch.nn.Identity()
    eye = torch.eye(3)
    sx = torch.stack([eye[[0, 0, 1, 1, 2, 2]] + 0.1 * torch.randn(6, 3) for _ in range(20)])  # [E, 6, 3]
    sy = torch.tensor([0, 0, 1, 1, 2, 2]).repeat(20, 1)
    qy = torch.arange(20) % 3
    qx = eye[qy] + 0.05
    hits = X.prototype_hits(feats, (sx, sy, qx, qy), n_way=3)
    assert hits.dtype == bool and hits.shape == (20,) and hits.all()
    wrong = X.prototype_hits(feats, (sx, sy, eye[(qy + 1) % 3], qy), n_way=3)
    assert not wrong.any()
    q = X.fewshot_quantity("fs_x", np.array([True, False, True, True]))
    assert q.method == "wilson" and q.estimate == 0.75 and q.samples == (1.0, 0.0, 1.0, 1.0)
    d = X.paired_difference(q, X.fewshot_quantity("fs_y", np.array([False, False, True, False])))
    assert d.method == "paired t" and d.estimate == pytest.approx(0.5)
    assert X.half_width(d) > 0


def test_fewshot_tuning_gives_hp_and_gp_features_the_same_trials():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(12).repeat_interleave(6)
    images = torch.rand(72, 1, 28, 28, generator=g)
    trials, chosen = X.tune_fewshot_lr(images, labels, np.arange(12), (1e-3, 3e-3), n_way=3, k_shot=1, val_classes=4,
                                       tune_episodes=32, tune_feature_epochs=1, val_episodes=20)
    assert sorted(trials["model"].unique()) == ["gp", "hp"]
    assert all(sorted(sub["lr"]) == [1e-3, 3e-3] for _, sub in trials.groupby("model"))
    assert set(chosen) == {"hp", "gp"} and set(chosen.values()) <= {1e-3, 3e-3}


def test_batched_episode_readouts_equal_fitting_each_episode_alone():
    """finetune_hits trains every episode's readout at once (EpisodeHeads through fit); each head
    must end where a readout fitted to its own support set alone ends (plain SGD, same init)."""
    torch.manual_seed(1)
    E, S, Fdim, N = 7, 6, 5, 3
    f_sup, sy = torch.randn(E, S, Fdim), torch.randint(0, N, (E, S))
    feats = torch.nn.Identity()
    episodes_ = (f_sup, sy, torch.randn(E, Fdim), torch.randint(0, N, (E,)))
    hits = X.finetune_hits(feats, episodes_, N, steps=15, lr=0.3, seed=4)
    torch.manual_seed(4)
    alone = []
    for e in range(E):
        head = torch.nn.Linear(Fdim, N)
        opt = torch.optim.SGD(head.parameters(), lr=0.3)
        for _ in range(15):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(head(f_sup[e]), sy[e]).backward()
            opt.step()
        alone.append(int(head(episodes_[2][e:e + 1]).argmax(1)) == int(episodes_[3][e]))
    assert hits.tolist() == alone
    torch.manual_seed(4)
    heads = X.EpisodeHeads(E, Fdim, N)
    torch.manual_seed(4)
    first = torch.nn.Linear(Fdim, N)
    torch.testing.assert_close(heads.weight[0], first.weight.detach())


@pytest.mark.parametrize("loop", ["meta_train", "recovered", "finetune_hits"])
def test_former_hand_written_loops_stop_on_a_nan_loss(loop):
    """The few-shot meta-training, the recovery and the per-episode readouts run through fit, so
    a NaN in their inputs stops them with TrainingDiverged naming the loop, instead of training on."""
    from compendium.learning.train import TrainingDiverged

    if loop == "meta_train":
        labels = torch.arange(6).repeat_interleave(4)
        images = torch.full((24, 1, 28, 28), float("nan"))
        with pytest.raises(TrainingDiverged, match="meta-train HP"):
            X.meta_train(X.FewShotNet(3, "hp"), images, labels, np.arange(6), k_shot=1, n_episodes=8, batch=4,
                         show_progress=False)
    elif loop == "recovered":
        setup = X.Setup(hidden=8, T=2)
        model = HybridMLP((36, 8, 3), "hp", T=2)
        with torch.no_grad():  # a NaN input only silences the LIF layers; a NaN weight reaches the loss
            for prm in model.parameters():
                prm.fill_(float("nan"))
        with pytest.raises(TrainingDiverged, match="recover"):
            X.recovered(model, (torch.rand(6, 36), torch.arange(6) % 3), setup, steps=2)
    else:
        episodes_ = (torch.full((4, 3, 5), float("nan")), torch.zeros(4, 3, dtype=torch.long), torch.randn(4, 5),
                     torch.zeros(4, dtype=torch.long))
        with pytest.raises(TrainingDiverged, match="fine-tune readouts"):
            X.finetune_hits(torch.nn.Identity(), episodes_, 3, steps=2)
