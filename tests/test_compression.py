"""Compression: projections against hand-computed cases, ADMM on a toy constrained least-squares
problem, exact constraints after the final projection, the activity penalty and the counters."""

import pytest
import torch
from torch import nn

from compendium.compression import ADMM, Constraint, SpikeActivity, compression_metrics, constrained_finetuning, hard_project
from compendium.compression import prune, prune_quantize, quantize
from compendium.compression.projections import quantize_scale
from compendium.spiking import OpCounter
from compendium.spiking.nets import spiking_mlp


def test_prune_keeps_the_largest_magnitudes_and_does_not_touch_its_input():
    w = torch.tensor([0.1, -0.5, 0.3, -0.05, 0.9, 0.2])
    before = w.clone()
    assert torch.equal(prune(w, 0.5), torch.tensor([0.0, -0.5, 0.3, 0.0, 0.9, 0.0]))
    assert torch.equal(w, before)  # pure: the official code's in-place zeroing is a known pitfall
    assert torch.equal(prune(w, 0.0), w)
    assert int((prune(torch.randn(1000), 0.97) != 0).sum()) == 30
    with pytest.raises(ValueError):
        prune(w, 1.0)


def test_ternary_quantisation_by_hand():
    # v = (1.0, 0.9, -1.1, 0.1): start alpha = 1.1, Q = (1, 1, -1, 0);
    # alpha = (1.0 + 0.9 + 1.1) / 3 = 1.0, Q unchanged -> fixed point
    v = torch.tensor([1.0, 0.9, -1.1, 0.1])
    alpha, q = quantize_scale(v, 2)
    assert alpha == pytest.approx(1.0)
    assert torch.equal(q, torch.tensor([1.0, 1.0, -1.0, 0.0]))
    assert torch.allclose(quantize(v, 2), torch.tensor([1.0, 1.0, -1.0, 0.0]))
    assert torch.allclose(quantize(v, 1), v.abs().mean() * torch.sign(v))


def test_quantisation_is_a_least_squares_fit_on_its_grid():
    torch.manual_seed(0)
    v = torch.randn(500)
    for bits in (2, 3, 4):
        alpha, q = quantize_scale(v, bits)
        L = 2 ** (bits - 1) - 1
        assert q.abs().max() <= L and torch.equal(q, q.round())
        # alpha is optimal for its Q, and Q is the nearest grid point for alpha
        assert alpha == pytest.approx(float((v * q).sum() / (q * q).sum()), rel=1e-5)
        assert torch.equal(q, torch.clamp(torch.round(v / alpha), -L, L))
        # more bits, smaller error
    errs = [float((v - quantize(v, b)).norm()) for b in (1, 2, 3, 4, 6)]
    assert errs == sorted(errs, reverse=True)


def test_joint_projection_prunes_then_quantises_the_survivors():
    w = torch.tensor([0.1, -0.5, 0.3, -0.05, 0.9, 0.2, 0.8, -0.7])
    out = prune_quantize(w, 0.5, 2)
    assert int((out != 0).sum()) <= 4
    assert torch.all(out[prune(w, 0.5) == 0] == 0)
    assert torch.unique(out.abs()[out != 0]).numel() == 1  # ternary: one magnitude
    assert Constraint(0.5, 2).satisfied(out) and not Constraint(0.5, 2).satisfied(w)


def test_admm_solves_a_toy_constrained_least_squares_problem():
    # min ||A x - b||^2 s.t. ||x||_0 <= 2, with b made by a 2-sparse x*: ADMM must find x*'s support
    torch.manual_seed(0)
    A = torch.randn(40, 10)
    x_star = torch.zeros(10)
    x_star[[2, 7]] = torch.tensor([1.5, -2.0])
    b = A @ x_star
    model = nn.Linear(10, 1, bias=False)
    nn.init.normal_(model.weight, std=0.3)
    admm = ADMM(model, {"": Constraint(sparsity=0.8)}, rho=0.5, growth=1.2)
    opt = torch.optim.SGD(model.parameters(), lr=0.002)
    for _ in range(40):
        for _ in range(50):
            opt.zero_grad()
            loss = ((A @ model.weight[0] - b) ** 2).sum() + admm.penalty()
            loss.backward()
            opt.step()
        admm.update()
    assert admm.residuals[-1]["primal"] < 1e-2  # W and Z agree
    hard_project(model, {"": Constraint(sparsity=0.8)})
    w = model.weight.detach()[0]
    assert set(torch.nonzero(w).flatten().tolist()) == {2, 7}
    assert torch.allclose(w, x_star, atol=0.05)


def test_weights_satisfy_the_constraint_exactly_after_constrained_finetuning():
    torch.manual_seed(0)
    net = spiking_mlp((20, 32, 4), T=3)
    cons = {"body.0.module.1": Constraint(sparsity=0.9, bits=2), "body.2.module": Constraint(bits=3)}
    hard_project(net, cons)
    support = net.body[0].module[1].weight.detach() != 0
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = torch.rand(16, 20), torch.randint(0, 4, (16,))
    with constrained_finetuning(net, cons):
        for _ in range(5):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        w_seen = net.body[0].module[1].weight.detach()  # what the forward pass uses
        assert torch.all(w_seen[~support] == 0)
    for name, c in cons.items():
        w = dict(net.named_modules())[name].weight.detach()
        assert c.satisfied(w), name
    w = net.body[0].module[1].weight.detach()
    assert torch.all(w[~support] == 0)  # the pruned support stayed frozen
    assert not isinstance(getattr(type(net.body[0].module[1]), "weight", None), property)  # parametrisation removed


@pytest.mark.parametrize("constraint", [Constraint(bits=2), Constraint(sparsity=0.95, bits=2), Constraint(sparsity=0.95)])
def test_constrained_finetuning_keeps_a_channels_last_conv_channels_last(constraint):
    """A conv with one input channel is channels-last only by its weight's strides; the
    projected weight the layer computes with keeps them, so fine-tuning runs the same NHWC
    convolutions and fused LIF + pooling kernel as pretraining (it lost them under
    quantisation), and its straight-through gradient still reaches the latent weight."""
    from compendium.compression.experiment import Setup, layer_constraints, make_model
    from compendium.spiking import native

    model = make_model(Setup(channels=(4, 8), hidden=16))
    conv = model.body[0].module
    assert conv.weight.stride() == (9, 1, 3, 1)
    cons = layer_constraints(model, constraint)
    assert "body.0.module" in cons  # the first conv is constrained too
    fused = []
    with constrained_finetuning(model, cons):
        assert conv.weight.stride() == (9, 1, 3, 1)
        x = torch.rand(3, 1, 28, 28)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(native, "supports_pool", lambda c, s, f=native.supports_pool: fused.append(f(c, s)) or fused[-1])
            model(x).sum().backward()
        assert conv.parametrizations.weight.original.grad.abs().sum() > 0
    assert fused == [True, True] if native.library() is not None else fused == [False, False]


def test_activity_penalty_is_the_mean_firing_rate_and_has_a_gradient():
    torch.manual_seed(0)
    net = spiking_mlp((10, 16, 3), T=4)
    x = torch.rand(8, 10)
    with SpikeActivity(net) as act:
        net(x)
        r = act.penalty()
        assert r.requires_grad
        r.backward()
        assert net.body[0].module[1].weight.grad.abs().sum() > 0
        with pytest.raises(RuntimeError):
            act.penalty()
    with OpCounter(net) as counter:
        with torch.no_grad():
            net(x)
    rate = sum(s.spikes for s in counter.spikes.values()) / sum(s.neuron_steps for s in counter.spikes.values())
    assert 0 < rate < 1
    # one LIF layer here, so the penalty (a mean over layers) is that layer's firing rate
    with SpikeActivity(net) as act, torch.no_grad():
        torch.manual_seed(5)
        net(x)
        r = float(act.penalty())
    with OpCounter(net) as counter, torch.no_grad():
        torch.manual_seed(5)
        net(x)
    (layer,) = counter.spikes.values()
    assert r == pytest.approx(layer.spikes / layer.neuron_steps)


def test_active_operations_skip_pruned_synapses():
    lin = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0, 0, 2], [0, 0, 0, 0], [3, 4, 0, 0]]))
    x = torch.tensor([[1.0, 1.0, 0.0, 1.0]])
    model = nn.Sequential(lin)
    with OpCounter(model) as dense:
        model(x)
    with OpCounter(model, skip_zero_weights=True) as sparse:
        model(x)
    assert dense.ops["0"].sops == 9  # 3 spikes x 3 outputs
    assert sparse.ops["0"].sops == 4  # spike 0 -> rows 0, 2; spike 1 -> row 2; spike 3 -> row 0
    conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = 1.0  # one centre tap in one output channel
    img = (torch.rand(1, 1, 5, 5) > 0.5).float()
    with OpCounter(nn.Sequential(conv), skip_zero_weights=True) as c:
        conv(img)
    assert c.ops["0"].sops == float(img.sum())


def test_metrics_count_connections_bits_and_size():
    net = spiking_mlp((10, 20, 5), T=2)
    cons = {"body.0.module.1": Constraint(sparsity=0.5, bits=2)}
    hard_project(net, cons)
    m = compression_metrics(net, cons, torch.rand(6, 10), time_steps=2)
    nnz = 100 + 100  # half of 200, plus the dense 100 of the second layer
    assert m["connection_ratio"] == pytest.approx(nnz / 300)
    assert m["size_compression"] == pytest.approx(32 * 300 / (2 * 100 + 32 * 100))
    assert m["spikes_per_sample"] >= 0 and m["active_ops"] >= 0


def test_bad_constraints_are_refused():
    with pytest.raises(ValueError):
        Constraint()
    with pytest.raises(ValueError):
        Constraint(sparsity=1.2)
    with pytest.raises(ValueError):
        Constraint(bits=0)
    with pytest.raises(ValueError, match="no synaptic layer"):
        ADMM(nn.Linear(2, 2), {"nope": Constraint(0.5)})


# --- quantities for the claims ------------------------------------------------------------------
def _strategies():
    import pandas as pd

    rows = [  # strategy, method, sparsity, bits, activity, acc, size_compression, spikes, ops
        ("ADMM prune 90%", "admm", 0.9, None, 0.0, 0.975, 10.0, 900.0, 9e5),
        ("ADMM prune 97%", "admm", 0.97, None, 0.0, 0.95, 33.0, 850.0, 4e5),
        ("one-shot prune 90%", "oneshot", 0.9, None, 0.0, 0.97, 10.0, 950.0, 9e5),
        ("ADMM ternary", "admm", None, 2, 0.0, 0.97, 16.0, 1000.0, 1e6),
        ("ADMM prune 90% + 2-bit", "admm", 0.9, 2, 0.0, 0.965, 160.0, 900.0, 9e5),
        ("ADMM prune 97% + 2-bit", "admm", 0.97, 2, 0.0, 0.90, 530.0, 800.0, 3e5),
        ("activity lambda=0", "-", None, None, 0.0, 0.985, 1.0, 1000.0, 1e6),
        ("activity lambda=0.2", "-", None, None, 0.2, 0.98, 1.0, 700.0, 8e5),
        ("activity lambda=1", "-", None, None, 1.0, 0.95, 1.0, 400.0, 6e5),
    ]
    cols = ("strategy", "method", "sparsity", "bits", "activity", "acc", "size_compression", "spikes_per_sample", "active_ops")
    return pd.DataFrame([dict(zip(cols, r)) for r in rows])


def test_claim_quantities_pick_the_declared_strategies():
    from compendium.compression import experiment as X

    t = _strategies()
    q = X.minimal_loss_quantities(t, 1000)
    assert (q["admm_prune_acc"].estimate, q["admm_prune_acc"].n, q["admm_prune_acc"].method) == (0.975, 1000, "wilson")
    assert q["ternary_acc"].estimate == 0.97  # not the joint 90 % + 2-bit row
    missing = X.minimal_loss_quantities(t[t["bits"].isna()], 1000)
    assert "ternary" in missing["ternary_acc"] and missing["admm_prune_acc"].estimate == 0.975
    a = X.activity_quantities(t, 1000)
    assert a["spike_cut"].estimate == pytest.approx(0.6) and a["ops_cut"].estimate == pytest.approx(0.4)
    assert a["spike_cut"].method == "1 run" and a["activity_strong_acc"].estimate == 0.95
    assert (a["activity_control_acc"].estimate, a["activity_control_acc"].method) == (0.985, "wilson")
    assert all(isinstance(v, str) for v in X.activity_quantities(t[t["activity"] == 0], 1000).values())
    # within 2 points of 0.98: the 90 % joint (160x) beats the best single technique (ternary, 16x);
    # the 97 % joint (530x) and 97 % pruning (33x) are more than 2 points down
    j = X.joint_quantities(t, 0.98, 10 ** 6)  # a test set so large that every loss is decided
    assert (j["joint_best_compression"].estimate, j["single_best_compression"].estimate) == (160.0, 16.0)
    d = j["joint_over_single_compression"]
    assert (d.estimate, d.low, d.high, d.method) == (144.0, 144.0, 144.0, "given")
    # 1,000 test images: the 90 % joint's 1.5-point loss, ternary's 1 point and 97 % pruning's 3 points
    # cannot be told from 2 points, so the difference ranges over every classification they allow
    d = X.joint_quantities(t, 0.98, 1000)["joint_over_single_compression"]
    assert d.estimate == 144.0 and d.low == 1.0 - 33.0 and d.high == 160.0 - 10.0
    from compendium.book.rules import INCONCLUSIVE, REPRODUCED, parse_rule

    rule = parse_rule({"kind": "threshold", "quantity": "joint_over_single_compression", "above": 0})
    assert rule.evaluate({"joint_over_single_compression": d}).verdict == INCONCLUSIVE
    big = X.joint_quantities(t, 0.98, 10 ** 6)["joint_over_single_compression"]
    assert rule.evaluate({"joint_over_single_compression": big}).verdict == REPRODUCED
    j = X.joint_quantities(t, 0.999, 10 ** 6)  # nothing within 2 points: both kinds count the uncompressed 1x
    assert (j["joint_best_compression"].estimate, j["single_best_compression"].estimate) == (1.0, 1.0)
    j = X.joint_quantities(t[t["bits"].isna() | t["sparsity"].isna()], 0.98, 10 ** 6)
    assert "no joint" in j["joint_best_compression"] and j["single_best_compression"].estimate == 16.0
    assert "no joint" in j["joint_over_single_compression"]
    with pytest.raises(ValueError, match="n_test"):
        X.joint_quantities(t, 0.98, 0)


# --- the default network, the ADMM schedule and the ADMM/one-shot comparison -----------------
def _digit_like(n: int = 256, seed: int = 0) -> torch.Tensor:
    """Sparse images with MNIST's mean intensity (about 0.13)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g) * (torch.rand(n, 1, 28, 28, generator=g) < 0.22)


def _default_setup():
    import yaml

    from compendium.compression import experiment as X
    from conftest import ROOT

    d = yaml.safe_load((ROOT / "notebooks" / "compression.yaml").read_text())["profiles"]["default"]
    return X.Setup(T=d["T"], channels=tuple(int(c) for c in d["channels"].split(",")), hidden=d["hidden"], seed=d["seed"])


def test_the_default_network_fires_at_initialisation_in_every_layer():
    from compendium.compression import experiment as X
    from conftest import mirror_has

    setup = _default_setup()
    rates = X.firing_at_init(setup, _digit_like())
    assert len(rates) == 3 and min(rates) > 0, rates
    if mirror_has("mnist/raw/train-images-idx3-ubyte.gz"):
        from compendium.datasets import load_mnist

        (x, _), _, _ = load_mnist(256, 64, split="full", seed=0)
        rates = X.firing_at_init(setup, x)
        assert min(rates) > 1e-3, rates  # the chapter's numbers: about 0.036, 0.018, 0.005


def test_channels_last_changes_the_layout_not_the_network():
    from compendium.compression import experiment as X

    fast, plain = X.make_model(X.Setup(channels=(4, 8), hidden=16)), X.make_model(X.Setup(channels=(4, 8), hidden=16, channels_last=False))
    conv = [m for m in fast.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in conv)
    for a, b in zip(fast.parameters(), plain.parameters()):
        assert torch.equal(a, b)  # same seed, same values
    x = _digit_like(16)
    torch.manual_seed(1)
    out_fast = fast(x)
    torch.manual_seed(1)
    out_plain = plain(x)
    assert torch.allclose(out_fast, out_plain, atol=1e-5)
    # the LIF layers run the fused kernel (fixed decay and threshold), not the reference loop
    names, stack, seen = set(), [out_fast.grad_fn], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        stack += [nxt for nxt, _ in fn.next_functions]
    assert any("LIFSequence" in n for n in names), names


def _tiny_problem(n: int = 48, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 12, generator=g)
    y = (x[:, :6].sum(1) > x[:, 6:].sum(1)).long()
    return x, y


def test_admm_iterations_are_spaced_by_steps():
    from compendium.compression import experiment as X

    torch.manual_seed(0)
    base = spiking_mlp((12, 16, 2), T=2)
    train = _tiny_problem(40)  # batch 8: 5 steps per epoch
    for per_epoch, expected in ((1, 2), (3, 5)):  # every 5 steps: 1 + final; every 2 steps: at 2, 4, 6, 8 + final
        setup = X.Setup(admm_epochs=2, finetune_epochs=1, batch_size=8, rho=0.1, rho_growth=2.0,
                        admm_updates_per_epoch=per_epoch, channels_last=False)
        row = X.compress(base, train, train, setup, constraint=Constraint(sparsity=0.5), method="admm", keep_model=False)
        assert row["admm_iterations"] == expected
        assert row["constraint_holds"]


def test_pruning_methods_get_the_same_trials_chosen_on_validation_and_paired_seeds():
    from compendium.compression import experiment as X

    torch.manual_seed(0)
    base = spiking_mlp((12, 16, 2), T=2)
    train, test = _tiny_problem(64, 0), _tiny_problem(32, 1)
    setup = X.Setup(admm_epochs=1, finetune_epochs=1, batch_size=16, admm_updates_per_epoch=2, channels_last=False)
    trials = {"admm": [dict(rho=0.01, finetune_lr=0.01), dict(rho=0.1, finetune_lr=0.01)],
              "oneshot": [dict(finetune_lr=0.001), dict(finetune_lr=0.01)]}
    cmp = X.compare_pruning_methods(base, train, test, setup, sparsity=0.8, trials=trials, seeds=[0, 1, 2])
    t = cmp.trials_frame()
    assert list(t["method"]).count("admm") == list(t["method"]).count("oneshot") == 2
    for m in ("admm", "oneshot"):  # the chosen setting has the best validation accuracy (ties: the first)
        best = t[t["method"] == m].sort_values("val_acc", ascending=False, kind="stable").iloc[0]
        assert cmp.chosen[m]["finetune_lr"] == best["finetune_lr"]
        assert [r["seed"] for r in cmp.rows(m)] == [0, 1, 2] and len(cmp.acc_samples(m)) == 3
    # the test images play no part in tuning: other test labels, the same trials and choices
    flipped = (test[0], 1 - test[1])
    again = X.compare_pruning_methods(base, train, flipped, setup, sparsity=0.8, trials=trials, seeds=[0])
    assert again.chosen == cmp.chosen and list(again.trials_frame()["val_acc"]) == list(t["val_acc"])
    q = X.method_comparison_quantities(cmp)
    assert q["admm_deep_acc"].n == 3 and q["admm_deep_acc"].samples == tuple(cmp.acc_samples("admm"))
    assert X.detectable_difference(cmp) >= 0
    summary = X.comparison_summary(cmp)
    assert summary["cmp_sparsity_pct"] == "80%" and "lr=" in summary["oneshot_chosen"]
    assert all(isinstance(v, str) for v in X.method_comparison_quantities(None).values())
    assert summary.keys() == X.comparison_summary(None).keys()
    with pytest.raises(ValueError, match="same number"):
        X.compare_pruning_methods(base, train, test, setup, sparsity=0.8, seeds=[0],
                                  trials={"admm": trials["admm"], "oneshot": trials["oneshot"][:1]})
    with pytest.raises(ValueError, match="can be tuned"):
        X.compare_pruning_methods(base, train, test, setup, sparsity=0.8, seeds=[0],
                                  trials={"admm": [dict(batch_size=8)], "oneshot": [dict(finetune_lr=0.01)]})
