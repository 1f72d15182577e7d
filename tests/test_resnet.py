"""tdBN against its formula, the ResNet builder, and the gradient-flow probe."""

import math

import numpy as np

import pytest
import torch

from compendium.datasets import load_cifar10
from compendium.datasets.registry import Registry
from compendium.spiking.norm import RESIDUAL_ALPHA, PerStepBN, TdBN, make_norm
from compendium.spiking.probes import gradient_flow
from compendium.spiking.resnet import LAYOUTS, SpikingResNet, count_parameters, small_layout


def tdbn_by_hand(x, alpha, vth, weight, bias, eps=1e-5):
    mean = x.mean(dim=(0, 1, 3, 4), keepdim=True)
    var = x.var(dim=(0, 1, 3, 4), unbiased=False, keepdim=True)
    return weight.view(1, 1, -1, 1, 1) * alpha * vth * (x - mean) / torch.sqrt(var + eps) + bias.view(1, 1, -1, 1, 1)


def test_tdbn_training_mode_equals_the_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 8, 3, 5, 5, generator=g, dtype=torch.float64) * 2 + 1
    bn = TdBN(3, threshold=0.7, alpha=RESIDUAL_ALPHA).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.1, -0.2, 0.0]))
    torch.testing.assert_close(bn(x), tdbn_by_hand(x, RESIDUAL_ALPHA, 0.7, bn.weight, bn.bias))


def test_tdbn_gradients_equal_the_formulas():
    """The affine α·V_th·γ rides inside the batch-norm call: its gradients (input, γ, β) must
    still be those of the by-hand formula, including the α·V_th factor on γ's."""
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(3, 5, 2, 4, 4, generator=g, dtype=torch.float64) * 2 + 1).requires_grad_()
    r = torch.randn(3, 5, 2, 4, 4, generator=g, dtype=torch.float64)
    bn = TdBN(2, threshold=0.6, alpha=RESIDUAL_ALPHA).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, -0.5]))
        bn.bias.copy_(torch.tensor([0.2, 0.3]))
    ours = torch.autograd.grad((bn(x) * r).sum(), (x, bn.weight, bn.bias))
    w, b = bn.weight.detach().clone().requires_grad_(), bn.bias.detach().clone().requires_grad_()
    ref = torch.autograd.grad((tdbn_by_hand(x, RESIDUAL_ALPHA, 0.6, w, b) * r).sum(), (x, w, b))
    for a, e in zip(ours, ref):
        torch.testing.assert_close(a, e)


def test_tdbn_eval_mode_uses_running_statistics():
    g = torch.Generator().manual_seed(1)
    bn = TdBN(2, threshold=0.5, momentum=1.0).double()  # momentum 1: running stats = last batch's
    x = torch.randn(3, 6, 2, 4, 4, generator=g, dtype=torch.float64) * 3 + 2
    bn(x)
    n = 3 * 6 * 4 * 4
    mean = x.mean(dim=(0, 1, 3, 4))
    var_unbiased = x.var(dim=(0, 1, 3, 4), unbiased=False) * n / (n - 1)
    torch.testing.assert_close(bn.running_mean, mean)
    torch.testing.assert_close(bn.running_var, var_unbiased)
    bn.eval()
    x2 = torch.randn(2, 5, 2, 4, 4, generator=g, dtype=torch.float64)
    expected = 0.5 * (x2 - mean.view(1, 1, -1, 1, 1)) / torch.sqrt(var_unbiased.view(1, 1, -1, 1, 1) + 1e-5)
    torch.testing.assert_close(bn(x2), expected)


def test_tdbn_on_fully_connected_input_and_shape_errors():
    x = torch.randn(3, 10, 4)
    y = TdBN(4, threshold=1.0)(x)
    torch.testing.assert_close(y.mean(dim=(0, 1)), torch.zeros(4), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="expects"):
        TdBN(5)(x)
    with pytest.raises(ValueError):
        make_norm("layer", 4, 0.5)


def test_per_step_bn_normalises_each_step_separately():
    x = torch.randn(3, 16, 2, 4, 4) + torch.arange(3.0).view(3, 1, 1, 1, 1) * 5  # a different mean per step
    y = PerStepBN(2)(x)
    torch.testing.assert_close(y.mean(dim=(1, 3, 4)), torch.zeros(3, 2), atol=1e-5, rtol=0)
    z = TdBN(2, threshold=1.0)(x)
    assert z.mean(dim=(1, 3, 4)).abs().max() > 1  # tdBN keeps the steps' differences


def test_per_step_bn_gradients_are_each_steps_own():
    """Input and affine gradients of PerStepBN equal those of one BatchNorm2d applied to each step
    as a separate batch (the steps' gradients stacked back in step order, γ/β summed over steps)."""
    g = torch.Generator().manual_seed(4)
    shift = torch.arange(3.0, dtype=torch.float64).view(3, 1, 1, 1, 1)  # each step its own statistics
    x = (torch.randn(3, 6, 2, 4, 4, generator=g, dtype=torch.float64) + shift).requires_grad_()
    r = torch.randn(3, 6, 2, 4, 4, generator=g, dtype=torch.float64)
    bn = PerStepBN(2).double()
    with torch.no_grad():
        bn.bn.weight.copy_(torch.tensor([0.7, 1.3]))
        bn.bn.bias.copy_(torch.tensor([0.1, -0.1]))
    ours = torch.autograd.grad((bn(x) * r).sum(), (x, bn.bn.weight, bn.bn.bias))
    ref_bn = torch.nn.BatchNorm2d(2).double()
    ref_bn.load_state_dict(bn.bn.state_dict())
    per_step = [torch.autograd.grad((ref_bn(x[t]) * r[t]).sum(), (x, ref_bn.weight, ref_bn.bias)) for t in range(3)]
    for i, got in enumerate(ours):
        torch.testing.assert_close(got, sum(p[i] for p in per_step))


def test_layouts_and_parameter_counts():
    assert LAYOUTS["resnet19"].depth() == 19 and LAYOUTS["resnet34"].depth() == 34 and LAYOUTS["resnet50"].depth() == 50
    assert small_layout(8, 4).depth() == 50
    # ResNet-34/50 with spiking neurons keep He et al.'s parameter counts (ImageNet head)
    assert count_parameters(SpikingResNet(LAYOUTS["resnet34"], classes=1000)) == 21_797_672
    assert count_parameters(SpikingResNet(LAYOUTS["resnet50"], classes=1000)) == 25_557_032


@pytest.mark.parametrize("norm", ["none", "bn", "tdbn"])
def test_gradients_reach_every_layer(norm):
    torch.manual_seed(0)
    net = SpikingResNet(small_layout(1, 4), T=2, in_channels=1, norm=norm, lif={"threshold": 0.3})
    x, y = torch.rand(8, 1, 12, 12) * 3, torch.randint(0, 10, (8,))
    assert net(x).shape == (8, 10)
    torch.nn.functional.cross_entropy(net(x), y).backward()
    if norm == "tdbn":
        missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
        assert missing == []


def test_gradient_flow_probe_sees_vanishing_without_normalisation():
    torch.manual_seed(0)
    x, y = torch.rand(16, 1, 16, 16), torch.randint(0, 10, (16,))
    flows = {}
    for norm in ("none", "tdbn"):
        torch.manual_seed(0)
        net = SpikingResNet(small_layout(3, 4), T=2, in_channels=1, norm=norm)
        flows[norm] = gradient_flow(net, list(net.blocks), x, y)
    assert len(flows["tdbn"].grad_norms) == 9 and all(g > 0 for g in flows["tdbn"].grad_norms)
    assert flows["none"].grad_norms[0] == 0.0  # no neuron near threshold: nothing reaches the first block
    assert flows["tdbn"].mean_abs_log_ratio < flows["none"].mean_abs_log_ratio
    assert math.isfinite(flows["none"].attenuation)


def test_cifar10_reader_on_a_small_archive_in_the_official_format(tmp_path):
    import hashlib
    import io
    import pickle
    import tarfile

    import numpy as np

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, n in [(f"data_batch_{i}", 4) for i in range(1, 6)] + [("test_batch", 3)]:
            payload = pickle.dumps({b"data": np.full((n, 3072), 255, np.uint8), b"labels": list(range(n))})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    path = tmp_path / "cache" / "cifar10" / "cifar-10-python.tar.gz"
    path.parent.mkdir(parents=True)
    path.write_bytes(buf.getvalue())
    sha = hashlib.sha256(buf.getvalue()).hexdigest()
    reg = Registry(Registry.parse({"cifar10": {"title": "t", "files": [
        {"path": "cifar10/cifar-10-python.tar.gz", "urls": [], "sha256": sha}]}}), cache_dir=tmp_path / "cache",
        offline=True, log=lambda m: None)
    (xtr, ytr), (xte, yte), info = load_cifar10(registry=reg)
    assert xtr.shape == (20, 3, 32, 32) and xte.shape == (3, 3, 32, 32) and float(xtr.max()) == 1.0
    assert ytr.tolist()[:4] == [0, 1, 2, 3] and "CIFAR-10" in info.description


@pytest.mark.parametrize("block", ["standard", "sew", "ms"])
def test_every_block_kind_builds_trains_and_keeps_shapes(block):
    torch.manual_seed(0)
    net = SpikingResNet(small_layout(2, 4), T=2, in_channels=1, block=block, lif={"threshold": 0.3})
    x, y = torch.rand(4, 1, 12, 12), torch.randint(0, 10, (4,))
    torch.nn.functional.cross_entropy(net(x), y).backward()
    assert net(x).shape == (4, 10)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.weight.grad is not None for c in convs)


def test_ms_block_shortcut_is_an_identity_on_membranes():
    from compendium.spiking.resnet import MSBlock

    blk = MSBlock(4, 4, 1, "tdbn", {"decay": 0.25, "threshold": 0.5})
    with torch.no_grad():
        for m in blk.branch.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.zero_()
    u = torch.randn(3, 2, 4, 5, 5)  # membrane-level input, not spikes
    torch.testing.assert_close(blk(u), u + blk.branch(u))
    torch.testing.assert_close(blk(u), u)  # with a silent branch the block is exactly the identity


def test_sew_outputs_spike_sums_and_standard_outputs_spikes():
    from compendium.spiking.resnet import SEWBlock, StandardBlock

    torch.manual_seed(0)
    s = (torch.rand(3, 2, 4, 6, 6) < 0.5).float()
    assert set(StandardBlock(4, 4, 1, "tdbn", {"threshold": 0.3, "decay": 0.25})(s).unique().tolist()) <= {0.0, 1.0}
    assert set(SEWBlock(4, 4, 1, "tdbn", {"threshold": 0.3, "decay": 0.25})(s).unique().tolist()) <= {0.0, 1.0, 2.0}
    with pytest.raises(ValueError, match="bottleneck"):
        SpikingResNet(LAYOUTS["resnet50"], block="ms")


# --- the chapters' claim quantities ----------------------------------------------------------

def test_accuracy_rate_and_above_chance_are_wilson_intervals_over_the_test_images():
    from compendium.book.quantities import Quantity
    from compendium.spiking.measures import above_chance, accuracy_rate

    q = accuracy_rate("acc", 0.9375, 128)
    assert q == Quantity.rate("acc", 120, 128) and q.method == "wilson" and q.n == 128
    d = above_chance("d", 0.9375, 128, classes=10)
    assert d.method == "wilson" and d.n == 128
    assert (d.estimate, d.low, d.high) == pytest.approx((q.estimate - 0.1, q.low - 0.1, q.high - 0.1))
    with pytest.raises(ValueError):
        above_chance("d", 0.5, 128, classes=1)
    with pytest.raises(ValueError):
        accuracy_rate("acc", 1.2, 128)
    # one accuracy per seed: seeds' spread and the shared test set's sampling, in quadrature
    s = above_chance("s", [0.30, 0.40, 0.35], 1000, classes=10)
    assert s.method == "t + wilson" and s.n == 3 and s.estimate == pytest.approx(0.25)
    assert s.low < 0.25 - 0.1 and s.high > 0.25 + 0.1  # three seeds 5 points apart: wide
    same = above_chance("s", [0.35, 0.35, 0.35], 1000, classes=10)  # identical seeds: still the test set's width
    w = accuracy_rate("w", 0.35, 1000)
    assert same.low == pytest.approx(w.low - 0.1) and same.high == pytest.approx(w.high - 0.1)
    top = above_chance("s", [0.55, 1.0, 1.0], 1000, classes=10)  # clipped to what accuracy minus chance can be
    assert top.high == pytest.approx(0.9) and top.low > -0.1
    assert above_chance("s", np.float32(0.9375), 128, classes=10).n == 128  # numpy scalars are one accuracy
    assert above_chance("s", [0.9375], 128, classes=10) == d.__class__("s", d.estimate, d.low, d.high, 128, "wilson")
    with pytest.raises(ValueError):
        above_chance("s", [0.3, 1.5], 1000, classes=10)


def test_depth_sweep_ends_compares_the_deepest_net_with_the_best_shallower_one():
    from compendium.spiking.measures import depth_sweep_ends

    rows = [{"depth": 8, "test_acc": 0.80}, {"depth": 44, "test_acc": 0.70}, {"depth": 20, "test_acc": 0.85}]
    deepest, best = depth_sweep_ends(rows, 1000, "ms_acc")
    assert (deepest.name, deepest.estimate, deepest.n) == ("ms_acc_deepest", 0.70, 1000)
    assert (best.name, best.estimate) == ("ms_acc_best_shallower", 0.85)
    with pytest.raises(ValueError, match="two depths"):
        depth_sweep_ends([{"depth": 8, "test_acc": 0.8}], 1000, "ms_acc")
    # one row per seed: means over the seeds with t-intervals (the spread between runs counts)
    rows = [{"depth": d, "seed": s, "test_acc": a} for d, accs in ((8, (0.80, 0.82, 0.78)), (20, (0.86, 0.84, 0.85)),
                                                                    (44, (0.60, 0.75, 0.70))) for s, a in enumerate(accs)]
    deepest, best = depth_sweep_ends(rows, 1000, "ms_acc")
    assert deepest.method == best.method == "t + wilson" and deepest.n == 3
    assert deepest.samples == (0.60, 0.75, 0.70) and best.estimate == pytest.approx(0.85)
    assert deepest.high - deepest.low > 0.2  # far wider than a rate over 1,000 images
