"""Adversarial attacks (G2S, RSF, L2 BIM, transfer), the event simulator and the spiking readouts."""

import numpy as np
import pytest
import torch
from torch import nn

from compendium.attacks import AttackResult, g2s, l2_attack, output_loss, rsf, spike_attack, transfer, zero_gradient
from compendium.events import frames_to_events, nmnist_like
from compendium.spiking.nets import spiking_mlp


def test_g2s_is_ternary_follows_the_sign_and_uses_minmax_probabilities():
    g = torch.tensor([[-3.0, 0.0, 1.0, 3.0]]).T.reshape(4, 1, 1)  # [T=4, B=1, 1]
    draws = torch.stack([g2s(g, torch.Generator().manual_seed(i)) for i in range(400)])
    assert set(draws.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert torch.all(draws[:, 0] == -1) and torch.all(draws[:, 3] == 1)  # |g| = max: p = 1
    assert torch.all(draws[:, 1] == 0)  # |g| = min: p = 0
    assert 0.2 < (draws[:, 2] != 0).float().mean() < 0.47  # p = 1/3
    assert torch.all(draws[:, 2] >= 0)
    flat = torch.full((3, 2, 5), 0.7)  # constant magnitude: nothing to rank, no flips
    assert g2s(flat).abs().sum() == 0


def test_rsf_flips_at_the_turnover_rate():
    s = torch.bernoulli(torch.full((8, 4, 100), 0.3), generator=torch.Generator().manual_seed(0))
    assert torch.equal(rsf(s, 0.0), s)
    assert torch.equal(rsf(s, 1.0), 1 - s)
    flipped = (rsf(s, 0.1, torch.Generator().manual_seed(1)) != s).float().mean()
    assert 0.08 < flipped < 0.12
    with pytest.raises(ValueError):
        rsf(s, 1.5)


class CountReadout(nn.Module):
    """Output = spike counts of the input pixels times fixed weights: a known, linear gradient."""

    def __init__(self, w):
        super().__init__()
        self.w = w  # [features, classes]

    def forward(self, s):  # s: [T, B, features]
        return s.sum(0) @ self.w


def test_spike_attack_keeps_spikes_binary_counts_flips_and_fools_a_linear_model():
    torch.manual_seed(0)
    # features 0-9 vote class 0, 10-19 class 1, with unequal weights (min-max G2S flips nothing
    # when every |g| is equal) small enough that softmax does not saturate (at a margin of ~40,
    # float32 cross-entropy has an exactly zero gradient)
    mag = 0.02 * torch.arange(1.0, 11.0)
    w = torch.cat([torch.stack([mag, -mag], 1), torch.stack([-mag, mag], 1)])
    model = CountReadout(w)
    s = torch.zeros(4, 6, 20)
    s[:, :, :10] = 1  # every sample votes class 0 with margin 8.8
    y = torch.zeros(6, dtype=torch.long)
    r = spike_attack(model, s, y, iterations=200, keep=True, show_progress=False)
    assert r.success.all() and r.clean_correct.all()
    adv = r.adversarial
    assert torch.all((adv == 0) | (adv == 1))
    assert np.array_equal(r.flips, (adv != s).transpose(0, 1).flatten(1).sum(1).numpy())
    assert np.allclose(r.l2, (adv - s).mean(0).norm(dim=1).numpy())
    assert torch.all(model(adv).argmax(1) != y)
    # a success needs >= 22 flips (margin 8.8, at most 0.4 per flip): a budget of 15 stops every sample
    capped = spike_attack(model, s, y, iterations=200, max_flips=15, show_progress=False)
    assert not capped.success.any() and (capped.flips <= 15).all()


def test_zero_gradient_is_detected_and_rsf_is_what_moves_the_input():
    class Dead(nn.Module):  # output independent of the input: the gradient is exactly zero
        def forward(self, s):
            return torch.tensor([[1.0, 0.0]]).expand(s.shape[1], 2) + 0 * s.sum(0)[:, :2]

    s = torch.bernoulli(torch.full((4, 3, 10), 0.5), generator=torch.Generator().manual_seed(0))
    y = torch.zeros(3, dtype=torch.long)
    assert zero_gradient(Dead(), s, y).all()
    stuck = spike_attack(Dead(), s, y, iterations=5, use_rsf=False, keep=True, show_progress=False)
    assert torch.equal(stuck.adversarial, s) and (stuck.zero_grad_steps == 5).all()
    moved = spike_attack(Dead(), s, y, iterations=5, use_rsf=True, gamma=0.2, keep=True, show_progress=False)
    assert (moved.flips > 0).all() and not moved.success.any()


def test_attack_refuses_non_binary_input():
    with pytest.raises(ValueError, match="binary"):
        spike_attack(lambda s: s.sum(0), torch.full((2, 3, 4), 0.5), torch.zeros(3, dtype=torch.long))


def test_l2_attack_finds_about_the_distance_to_a_linear_boundary():
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    model = nn.Linear(2, 2, bias=False)
    model.weight.data = w.T.clone()  # logits = x; class = larger coordinate
    x = torch.tensor([[0.8, 0.2], [0.6, 0.3]])
    y = torch.zeros(2, dtype=torch.long)
    r = l2_attack(model, x, y, step=0.01, iterations=200)
    exact = (x[:, 0] - x[:, 1]).abs() / np.sqrt(2)  # distance to the line x0 = x1
    assert r.success.all()
    assert np.allclose(r.l2, exact.numpy(), atol=0.011)


def test_transfer_counts_only_crafted_and_clean_correct_examples():
    target = lambda x: torch.stack([x[:, 0], -x[:, 0]], 1)  # class 0 iff x0 > 0
    clean = torch.tensor([[1.0], [1.0], [-1.0], [1.0]])
    adv = torch.tensor([[-1.0], [1.0], [-1.0], [-1.0]])
    y = torch.zeros(4, dtype=torch.long)
    out = transfer(target, clean, adv, y, crafted=np.array([True, True, True, False]))
    assert out == {"candidates": 2, "transfer_rate": 0.5}


def test_success_curves_are_monotone_in_the_budget():
    r = AttackResult(clean_correct=np.array([True, True, True, False]), success=np.array([True, True, False, False]),
                     iterations=np.zeros(4, int), flips=np.array([5.0, 50.0, 0.0, 0.0]), l2=np.array([0.5, 2.0, 0.0, 0.0]),
                     zero_grad_steps=np.zeros(4, int))
    assert r.success_rate() == pytest.approx(2 / 3)
    assert list(r.curve(np.array([0.0, 1.0, 3.0]))) == pytest.approx([0.0, 1 / 3, 2 / 3])
    assert r.success_rate(max_flips=10) == pytest.approx(1 / 3)


def test_output_losses():
    out = torch.tensor([[0.9, 0.1], [0.2, 0.6]])
    y = torch.tensor([0, 1])
    assert output_loss("mse")(out, y).item() == pytest.approx(((0.01 + 0.01) + (0.04 + 0.16)) / 2)
    with pytest.raises(ValueError):
        output_loss("hinge")


# --- event simulator ----------------------------------------------------------------------------
def test_static_scene_emits_no_events_and_polarity_follows_the_change():
    static = torch.rand(1, 8, 8).expand(6, 8, 8)
    assert frames_to_events(static).sum() == 0
    frames = torch.full((3, 2), 0.5)
    frames[1:, 0] = 1.0  # pixel 0 brightens (log ratio 0.69 > C)
    frames[1:, 1] = 0.2  # pixel 1 darkens
    ev = frames_to_events(frames, threshold=0.2, eps=0.0)
    assert ev[0, 0, 0] == 1 and ev[0, 1, 0] == 0  # ON for the brightening pixel
    assert ev[0, 1, 1] == 1 and ev[0, 0, 1] == 0  # OFF for the darkening pixel
    assert ev[1].sum() == 0  # no change afterwards
    counts = frames_to_events(frames, threshold=0.2, eps=0.0, counts=True)
    assert counts[0, 0, 0] == np.floor(np.log(2.0) / 0.2)


def test_slow_changes_accumulate_against_the_reference_level():
    frames = torch.exp(torch.arange(6.0) * 0.09).unsqueeze(1)  # +0.09 per frame in log, C = 0.2
    ev = frames_to_events(frames, threshold=0.2, eps=0.0, counts=True)
    assert ev[:, 0].sum() == 2 and ev[:, 1].sum() == 0  # 0.45 accumulated → two ON events, none per frame alone
    refr = frames_to_events(torch.exp(torch.arange(6.0) * 0.25).unsqueeze(1), threshold=0.2, eps=0.0, refractory=1)
    assert refr[:, 0, 0].tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]


def _events_step_by_step(frames, threshold, substeps, refractory, noise, generator):
    """The simulator's rule written plainly: every sub-step masks by the refractory countdown and
    draws its own spurious events (spurious, then polarity) from the generator."""
    log = torch.log(frames.float() + 1e-2)
    ref, quiet = log[0].clone(), torch.zeros_like(log[0])
    out = torch.zeros(frames.shape[0] - 1, 2, *frames.shape[1:])
    for n in range(frames.shape[0] - 1):
        for s in range(1, substeps + 1):
            level = log[n] + (log[n + 1] - log[n]) * (s / substeps)
            active = quiet <= 0
            on = torch.floor((level - ref) / threshold).clamp_min(0) * active
            off = torch.floor((ref - level) / threshold).clamp_min(0) * active
            ref = ref + (on - off) * threshold
            spurious = torch.rand(ref.shape, generator=generator) < noise
            up = torch.rand(ref.shape, generator=generator) < 0.5
            on, off = on + (spurious & up), off + (spurious & ~up)
            quiet = torch.where((on + off) > 0, torch.full_like(quiet, float(refractory)), quiet - 1)
            out[n, 0] += on
            out[n, 1] += off
    return out


@pytest.mark.parametrize("substeps, refractory, noise", [(1, 0, 0.05), (3, 0, 0.05), (1, 2, 0.05), (2, 1, 0.0)])
def test_events_equal_the_step_by_step_rule_and_its_noise_draws(substeps, refractory, noise):
    frames = torch.rand(12, 6, 5, generator=torch.Generator().manual_seed(substeps)) * 2
    frames[4] = frames[3]  # a still interval
    got = frames_to_events(frames, 0.15, substeps=substeps, refractory=refractory, noise=noise, counts=True,
                           generator=torch.Generator().manual_seed(9))
    want = _events_step_by_step(frames, 0.15, substeps, refractory, noise, torch.Generator().manual_seed(9))
    assert torch.equal(got, want)
    assert got.sum() > 0


def test_nmnist_like_events_are_binary_two_channel_and_where_the_digit_is():
    img = torch.zeros(2, 1, 28, 28)
    img[0, 0, 10:18, 10:18] = 1.0
    ev = nmnist_like(img, T=6)
    assert ev.shape == (6, 2, 2, 34, 34)
    assert torch.all((ev == 0) | (ev == 1))
    assert ev[:, 0].sum() > 0 and ev[:, 0, 0].sum() > 0 and ev[:, 0, 1].sum() > 0  # ON and OFF
    assert ev[:, 1].sum() == 0  # a blank image has no events


# --- spiking readouts ---------------------------------------------------------------------------
def test_rate_readout_gives_output_firing_rates_and_layer_overrides_apply():
    net = spiking_mlp((12, 16, 3), T=5, readout="rate", layer_lif={-2: {"threshold": 2.0}})
    lifs = [m for m in net.body if m.__class__.__name__ == "LIF"]
    assert len(lifs) == 2 and float(lifs[0].threshold) == 2.0 and float(lifs[1].threshold) == 0.5
    out = net(torch.rand(4, 12))
    assert out.shape == (4, 3) and torch.all((out >= 0) & (out <= 1))
    assert torch.allclose(out * 5, (out * 5).round())  # counts / T
    s = torch.bernoulli(torch.full((5, 4, 12), 0.5))
    net_spikes = spiking_mlp((12, 16, 3), T=5, readout="rate", encoding="spikes")
    net_spikes.load_state_dict(net.state_dict())
    lifs2 = [m for m in net_spikes.body if m.__class__.__name__ == "LIF"]
    lifs2[0].threshold.fill_(2.0)
    assert torch.equal(net_spikes(s.transpose(0, 1)), net.forward_spikes(s))
    with pytest.raises(ValueError, match="layer_lif"):
        spiking_mlp((12, 16, 3), readout="rate", layer_lif={2: {}})
    with pytest.raises(ValueError, match="spike input"):
        net_spikes(torch.rand(4, 3, 12))


# --- quantities for the claims ------------------------------------------------------------------
def _result(correct, success, flips, l2=None):
    n = len(correct)
    return AttackResult(clean_correct=np.array(correct), success=np.array(success) & np.array(correct),
                        iterations=np.ones(n, int), flips=np.array(flips, float),
                        l2=np.array(l2 if l2 is not None else flips, float), zero_grad_steps=np.zeros(n, int))


def test_success_rate_is_a_wilson_rate_over_attacked_samples():
    from compendium.attacks.experiment import success_rate

    r = _result([True, True, True, False], [True, True, False, True], [1, 2, 0, 9])
    q = success_rate("s", r)
    assert (q.estimate, q.n, q.method) == (pytest.approx(2 / 3), 3, "wilson") and q.low < 2 / 3 < q.high
    assert "none was attacked" in success_rate("s", _result([False], [False], [0]))


def test_perturbation_is_over_fooled_samples_only():
    from compendium.attacks.experiment import perturbation

    r = _result([True, True, True, True], [True, True, True, False], [10, 20, 30, 1000], l2=[1.0, 2.0, 3.0, 99.0])
    med = perturbation("m", r, "flips", per=10)
    assert med.method == "bootstrap" and med.n == 3 and med.estimate == pytest.approx(2.0)
    assert 1.0 <= med.low <= 2.0 <= med.high <= 3.0
    mean = perturbation("m", r, "l2", statistic="mean")
    assert mean.method == "t" and mean.estimate == pytest.approx(2.0)
    assert "no attacked sample was fooled" in perturbation("m", _result([True], [False], [0]), "l2")


def test_dominance_counts_wins_by_success_or_fewer_flips_and_skips_ties():
    from compendium.attacks.experiment import dominance

    correct = [True] * 6 + [False]
    a = _result(correct, [True, True, True, False, True, False, True], [5, 5, 9, 0, 5, 0, 1])
    b = _result(correct, [False, True, True, False, True, True, True], [0, 9, 5, 0, 5, 3, 1])
    # a wins sample 0 (b fails) and 1 (fewer flips); b wins 2 (fewer flips) and 5 (a fails); 3, 4 tie
    q = dominance("d", a, b)
    assert (q.estimate, q.n, q.method) == (0.5, 4, "wilson")
    assert "tie on every" in dominance("d", a, a)
    with pytest.raises(ValueError, match="same attacked samples"):
        dominance("d", a, _result([True] * 7, [True] * 7, [1] * 7))


def _grid(rows):
    import pandas as pd

    return pd.DataFrame([dict(zip(("loss", "threshold", "seed", "attacked", "zero_grad_count", "success_g2s_count"), r))
                         for r in rows])


def test_trap_quantities_pool_seeds_pick_worst_and_best_and_name_what_is_missing():
    from compendium.attacks.experiment import trap_quantities

    grid = _grid([("ce", 0.5, 0, 50, 20, 20), ("ce", 0.5, 1, 50, 30, 10), ("ce", 1.0, 0, 40, 4, 36),
                  ("ce", 1.0, 1, 60, 6, 50), ("mse", 0.5, 0, 50, 5, 40), ("mse", 0.5, 1, 50, 5, 40)])
    q, chosen = trap_quantities(grid)
    assert chosen == {"worst_threshold": 0.5, "best_threshold": 1.0}
    assert (q["ce_zero_worst"].estimate, q["ce_zero_worst"].n) == (0.5, 100)
    assert q["ce_zero_worst_halved"].estimate == 0.25 and q["ce_zero_worst_halved"].high == q["ce_zero_worst"].high / 2
    assert (q["ce_zero_best"].estimate, q["ce_g2s_success_best"].estimate) == (0.1, 0.86)
    assert q["ce_g2s_success_worst"].estimate == 0.3 and q["mse_zero_at_worst"].estimate == 0.1
    # no MSE model: only the MSE quantity is missing, with a reason (no 'MSE not run' text swallowing the rest)
    q, _ = trap_quantities(grid[grid["loss"] == "ce"])
    assert "no MSE-trained model" in q["mse_zero_at_worst"] and q["ce_zero_best"].estimate == 0.1
    # one threshold: the escape cannot be measured
    q, chosen = trap_quantities(grid[grid["threshold"] == 0.5])
    assert "second penultimate threshold" in q["ce_zero_best"] and chosen["best_threshold"] != chosen["best_threshold"]
    # no CE model that classified anything right
    q, _ = trap_quantities(_grid([("ce", 0.5, 0, 0, 0, 0), ("mse", 0.5, 0, 10, 1, 5)]))
    assert all(isinstance(v, str) for v in q.values())


def test_trap_fractions_use_the_census_and_success_the_attacked_samples():
    import pandas as pd

    from compendium.attacks.experiment import trap_quantities

    cols = ("loss", "threshold", "seed", "zero_n", "zero_grad_count", "attacked", "success_g2s_count")
    grid = pd.DataFrame([dict(zip(cols, r)) for r in [
        ("ce", 0.5, 0, 1000, 400, 50, 20), ("ce", 0.5, 1, 1000, 500, 50, 10),
        ("ce", 1.5, 0, 900, 90, 40, 36), ("ce", 1.5, 1, 1100, 110, 60, 50),
        ("mse", 0.5, 0, 1000, 100, 50, 40), ("mse", 0.5, 1, 1000, 100, 50, 40)]])
    q, chosen = trap_quantities(grid)
    assert chosen == {"worst_threshold": 0.5, "best_threshold": 1.5}
    assert (q["ce_zero_worst"].estimate, q["ce_zero_worst"].n) == (0.45, 2000)
    assert (q["ce_zero_best"].estimate, q["ce_zero_best"].n) == (0.1, 2000)
    assert (q["ce_g2s_success_worst"].estimate, q["ce_g2s_success_worst"].n) == (0.3, 100)
    assert q["ce_g2s_success_best"].estimate == pytest.approx(0.86) and q["mse_zero_at_worst"].n == 2000


# --- the SNN-vs-ANN comparison, the census and the training budget --------------------------------
def test_topk_flips_takes_the_k_largest_legal_gradients_and_keeps_spikes_binary():
    from compendium.attacks import topk_flips

    s = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]).reshape(1, 1, 6)  # [T=1, B=1, 6]
    g = torch.tensor([5.0, 4.0, -3.0, -2.0, 1.0, 0.0]).reshape(1, 1, 6)
    # legal: bit 0 (0, g > 0), bit 3 (1, g < 0), bit 4 (0, g > 0); bits 1 and 2 would leave {0, 1}
    assert topk_flips(g, s, 2).flatten().tolist() == [1.0, 0.0, 0.0, -1.0, 0.0, 0.0]
    assert topk_flips(g, s, 10).flatten().tolist() == [1.0, 0.0, 0.0, -1.0, 1.0, 0.0]  # only 3 legal
    assert torch.all(((s + topk_flips(g, s, 10)) == 0) | ((s + topk_flips(g, s, 10)) == 1))
    with pytest.raises(ValueError):
        topk_flips(g, s, 0)
    model = CountReadout(torch.cat([torch.stack([0.02 * torch.arange(1.0, 11.0)] * 2, 1) * torch.tensor([1.0, -1.0]),
                                    torch.stack([0.02 * torch.arange(1.0, 11.0)] * 2, 1) * torch.tensor([-1.0, 1.0])]))
    spikes = torch.zeros(4, 3, 20)
    spikes[:, :, :10] = 1
    r = spike_attack(model, spikes, torch.zeros(3, dtype=torch.long), iterations=100, topk=3, keep=True,
                     show_progress=False)
    assert r.success.all() and torch.all((r.adversarial == 0) | (r.adversarial == 1))
    assert np.all(r.flips <= 3 * (r.iterations + 1))
    # one big step, then the binary search keeps the fewest flips in gain order: the margin 8.8
    # falls by 0.4 for each of the 8 best bits, then 0.36 (8 bits), 0.32 (8 bits), 0.28: 25 bits
    one = spike_attack(model, spikes, torch.zeros(3, dtype=torch.long), iterations=3, topk=100, show_progress=False)
    assert one.success.all() and (one.flips == 25).all()


def test_lattice_l2_attack_queries_only_reachable_rate_images():
    from compendium.attacks import lattice_l2_attack

    T = 4
    model = nn.Linear(2, 2, bias=False)
    model.weight.data = torch.eye(2)  # class = larger rate
    spikes = torch.zeros(T, 3, 2)
    spikes[:, :, 0] = 1  # rate (1, 0): class 0
    spikes[:2, 1, 1] = 1  # rate (1, 0.5)
    spikes[:1, 2, 1] = 1  # rate (1, 0.25)
    r = lattice_l2_attack(model, spikes, torch.zeros(3, dtype=torch.long), step=0.05, iterations=200)
    assert r.success.all()
    # the flips are whole bits (T * |Δr| summed), and L2 is that of a lattice perturbation
    assert np.allclose(r.flips, np.round(r.flips)) and (r.flips >= 1).all()
    per_pixel = r.l2 ** 2 * T ** 2  # sum of squared bit counts per pixel: an integer
    assert np.allclose(per_pixel, np.round(per_pixel), atol=1e-4)
    # the closer the clean rate is to the boundary, the smaller the perturbation (ties: the
    # diagonal path crosses the rounding points of both pixels at once)
    assert r.l2[1] <= r.l2[2] < r.l2[0]
    with pytest.raises(ValueError, match="binary"):
        lattice_l2_attack(model, torch.full((T, 3, 2), 0.5), torch.zeros(3, dtype=torch.long))


def test_rate_coding_and_the_rate_ann_read_the_same_input_as_the_snn():
    from compendium.attacks.experiment import RateANN, build_snn, Setup
    from compendium.spiking.layers import Encoder

    torch.manual_seed(0)
    x = torch.tensor([[0.0, 0.25, 0.5, 1.0, 1.5]]).expand(4000, 5)
    s = Encoder("rate", 8)(x)
    assert s.shape == (8, 4000, 5) and torch.all((s == 0) | (s == 1))
    assert torch.allclose(s.mean((0, 1)), torch.tensor([0.0, 0.25, 0.5, 1.0, 1.0]), atol=0.01)
    ann = RateANN((5, 7, 3), T=8)
    snn = build_snn(Setup(T=8, hidden=7), None, in_features=5)
    torch.manual_seed(1)
    a = snn.encoder(x[:6])
    torch.manual_seed(1)
    assert torch.equal(a, ann.encoder(x[:6]))  # one encoder, the same draws
    spikes = torch.bernoulli(torch.full((8, 6, 5), 0.4))
    assert torch.allclose(ann.forward_spikes(spikes), ann.net(spikes.mean(0)))
    assert ann(torch.rand(6, 5)).shape == (6, 3)
    with pytest.raises(ValueError, match="spike input"):
        ann.forward_spikes(spikes[:3])


def _digit_like(n=512, seed=0):
    """Sparse images with MNIST's mean intensity (about 0.13), for initialisation checks."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g) * (torch.rand(n, 1, 28, 28, generator=g) < 0.22)


def test_every_snn_variant_of_the_default_profile_fires_at_initialisation():
    import yaml

    from compendium.attacks.experiment import Setup, build_snn, threshold_init
    from compendium.spiking.init import firing_rates
    from conftest import ROOT

    default = yaml.safe_load((ROOT / "notebooks" / "adversarial.yaml").read_text())["profiles"]["default"]
    setup = Setup(T=default["T"], hidden=default["hidden"], decay=default["decay"], threshold=default["threshold"])
    x = _digit_like()
    thresholds = {float(t) for t in default["thresholds"].split(",")} | {setup.threshold}
    for th in sorted(thresholds):
        torch.manual_seed(0)
        rates = firing_rates(build_snn(setup, x, penultimate_threshold=th), x)
        assert len(rates) == 2 and min(rates) > 0.01, (th, rates)
    # without the threshold-scaled initialisation the output layer is (nearly) silent, and at
    # a penultimate threshold of 1.5 the hidden layer too: the reason the chapter uses it
    torch.manual_seed(0)
    silent = firing_rates(build_snn(setup, None, penultimate_threshold=1.5), x)
    assert max(silent) < 0.01
    # the event-style SNN (spike input 2 x 34 x 34) fires too
    events = nmnist_like(x[:128], default["T"]).transpose(0, 1).contiguous()
    torch.manual_seed(0)
    ev_net = build_snn(setup, events, in_features=2 * 34 * 34, encoding="spikes")
    assert min(firing_rates(ev_net, events)) > 0.01
    # threshold_init sets every layer's input current to std gain * V_th
    torch.manual_seed(0)
    net = build_snn(setup, None)
    stds = threshold_init(net, x, 0.5, gain=1.0)
    assert stds == pytest.approx([0.5, 0.5], rel=0.1)


def test_zero_gradient_census_counts_correct_images_and_their_all_zero_gradients():
    from compendium.attacks.experiment import zero_gradient_census

    class Dead(nn.Module):  # always class 0, gradient exactly zero
        def forward(self, s):
            return torch.tensor([[1.0, 0.0]]).expand(s.shape[1], 2) + 0 * s.sum(0).flatten(1)[:, :2]

    x = torch.rand(10, 4)
    y = torch.tensor([0] * 7 + [1] * 3)
    assert zero_gradient_census(Dead(), x, y, T=3, batch_size=4) == (7, 7)
    lin = CountReadout(torch.tensor([[1.0, -1.0]] * 4))  # a live gradient everywhere
    n_correct, n_zero = zero_gradient_census(lin, x, torch.zeros(10, dtype=torch.long), T=3)
    assert n_zero == 0 and n_correct <= 10


def test_smallest_perturbation_takes_the_best_attack_per_sample_and_censors_the_rest():
    from compendium.attacks.experiment import robustness, smallest_perturbation

    correct = [True, True, True, False]
    a = _result(correct, [True, False, True, True], [10, 0, 30, 1])
    b = _result(correct, [True, True, False, True], [20, 40, 0, 1])
    assert smallest_perturbation([a, b], "flips").tolist() == [10, 40, 30]
    assert smallest_perturbation([a], "flips", per=10, cap=99).tolist() == [1.0, 99, 3.0]
    q = robustness("m", [[a, b], [a, b]], "flips", cap=1000)
    assert q.method == "bootstrap" and q.n == 6 and q.estimate == 30
    resisted = _result(correct, [False, False, True, False], [0, 0, 5, 0])
    assert "censored" in robustness("m", [[resisted]], "flips", cap=1000)
    with pytest.raises(ValueError, match="same model"):
        smallest_perturbation([a, _result([True] * 4, [True] * 4, [1] * 4)], "flips")


def test_resolution_is_the_half_width_of_the_rules_difference_interval():
    from compendium.attacks.experiment import resolution
    from compendium.book.quantities import Quantity, difference

    a, b = Quantity.rate("a", 500, 1000), Quantity.rate("b", 300, 1000)
    d = difference(a, b)
    assert resolution(a, b) == pytest.approx((d.high - d.low) / 2) and 0.03 < resolution(a, b) < 0.05


def test_train_models_gives_every_variant_the_same_trials_and_records_firing_at_init():
    from compendium.attacks.experiment import ANN_ANALOG, ANN_RATE, Setup, snn_label, train_models

    torch.manual_seed(0)
    x, y = _digit_like(160, 1), torch.randint(0, 10, (160,))
    setup = Setup(T=2, hidden=16, epochs=1, batch_size=32, iterations=2)
    models = train_models((x, y), (x[:40], y[:40]), setup, thresholds=(0.5, 1.0), losses=("ce", "mse"),
                          seeds=(0, 1), lrs=(1e-3, 1e-2), tune_epochs=1, show_progress=False)
    table = models.table()
    assert set(table.index) == {snn_label(l, t) for l in ("ce", "mse") for t in (0.5, 1.0)} | {ANN_RATE, ANN_ANALOG}
    trials = [t for c in models.comparisons.values() for t in c.trials]
    assert len(trials) == 6 * 2 and {t["lr"] for t in trials} == {1e-3, 1e-2}
    assert models.seeds(ANN_RATE) == [0, 1] and models.all_fire_at_init()
    assert set(models.init_rates) == set(models.snn_labels()) and len(models.init_rates[snn_label("ce", 1.0)]) == 2
    assert "2 learning-rate trials" in models.budget_text()
