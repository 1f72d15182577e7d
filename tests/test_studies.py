"""Depth/normalisation studies: an initialisation under which every variant can learn, the
firing check at initialisation, the probes read during training, and their determinism."""

import pytest
import torch

from compendium.spiking.init import firing_rates, frozen_buffers, threshold_scaled_init
from compendium.spiking.resnet import SpikingResNet, small_layout
from compendium.spiking.studies import (blocks_for_depth, downsample, init_firing_table, isometry_probe,
                                        resnet_builder)

LIF = dict(decay=0.25, threshold=0.5)


def images(n=64, size=14, seed=0):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def test_threshold_scaled_init_sets_each_layer_output_to_the_threshold_scale():
    torch.manual_seed(0)
    net = SpikingResNet(small_layout(2, 8), T=2, in_channels=1, norm="none", lif=LIF)
    x = images()
    assert min(firing_rates(net, x)) == 0.0  # PyTorch's default init: a silent layer, no gradient below it
    stds = threshold_scaled_init(net, x, 0.5)
    assert len(stds) == sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in net.modules()) - 1
    assert all(abs(s - 0.5) < 0.05 for s in stds)
    assert min(firing_rates(net, x)) > 0.01



def test_threshold_scaled_init_stopping_at_the_measured_layer_changes_nothing():
    """The init ends each measuring pass at the measured layer; a naive version that runs the
    whole net every time must give the same weights, bit for bit."""
    x = images(16)

    def naive(net, iterations=2):
        layers = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))][:-1]
        with torch.no_grad(), frozen_buffers(net):
            for layer in layers:
                for _ in range(iterations):
                    out = []
                    h = layer.register_forward_hook(lambda _m, _i, o: out.append(o))
                    net(x)
                    h.remove()
                    layer.weight.mul_(0.5 / float(out[0].std()))

    nets = []
    for _ in range(2):
        torch.manual_seed(3)
        nets.append(SpikingResNet(small_layout(2, 8), T=2, in_channels=1, norm="none", lif=LIF))
    threshold_scaled_init(nets[0], x, 0.5)
    naive(nets[1])
    assert all(torch.equal(a, b) for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()))
    with pytest.raises(RuntimeError, match="was not called"):  # a target outside the forward pass is named
        threshold_scaled_init(nets[0], x, 0.5, targets=[(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))])

def test_probes_leave_bn_statistics_untouched():
    torch.manual_seed(0)
    net = SpikingResNet(small_layout(1, 4), T=2, in_channels=1, norm="bn", lif=LIF)
    before = {k: v.clone() for k, v in net.named_buffers()}
    firing_rates(net, images())
    isometry_probe(images(16), torch.zeros(16, dtype=torch.long))(net, 0)
    with frozen_buffers(net):
        net(images())
    assert all(torch.equal(before[k], v) for k, v in net.named_buffers())
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize("norm", ["none", "bn", "tdbn"])
def test_tdbn_default_variants_fire_at_initialisation(norm):
    """The tdBN chapter's default comparison (32 layers, width 8, T=4, 14×14 inputs): every
    variant, with the initialisation the chapter gives it, has spikes in every LIF layer."""
    x = images(128)
    table = init_firing_table({norm: resnet_builder(32, 8, T=4, in_channels=1, lif=LIF, norm=norm, init_x=x)}, x)
    assert table.loc[norm, "layers firing"] == 1.0 and table.loc[norm, "min rate"] > 0.01


@pytest.mark.parametrize("block", ["standard", "sew", "ms"])
def test_msresnet_default_variants_fire_at_initialisation(block):
    x = images(128)
    table = init_firing_table({block: resnet_builder(44, 8, T=4, in_channels=1, lif=LIF, block=block, init_x=x)}, x)
    assert table.loc[block, "layers firing"] == 1.0 and table.loc[block, "min rate"] > 0.01


def test_isometry_probe_reports_per_block_gradients_and_is_deterministic():
    x, y = images(16), torch.arange(16) % 10
    out = []
    for _ in range(2):
        torch.manual_seed(1)
        net = resnet_builder(14, 4, T=2, in_channels=1, lif=LIF)()
        out.append(isometry_probe(x, y)(net, 0))
    assert out[0] == out[1]
    assert len(out[0]["grad_norms"]) == len(out[0]["firing_rates"]) == 6 and out[0]["first_block_grad"] > 0


def test_depth_helpers_validate():
    assert blocks_for_depth(20) == 3
    with pytest.raises(ValueError, match="6n\\+2"):
        blocks_for_depth(21)
    assert downsample(images(2, 28), 2).shape == (2, 1, 14, 14)
    with pytest.raises(ValueError):
        downsample(images(2), 0)
