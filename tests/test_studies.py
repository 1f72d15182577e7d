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



def naive_threshold_init(net, x, iterations=2, pairs=None, stop=True):
    """The init written plainly: every pass (``iterations`` rescalings, then the measurement
    returned) runs the net from ``x`` up to the measured module's output (as the init did
    before it reused inputs), or through the whole net with ``stop=False``; ``pairs``:
    (rescaled layer, measured module)."""
    if pairs is None:
        pairs = [(m, m) for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))][:-1]

    class Stop(BaseException):
        pass

    def grab(out):
        def hook(_m, _i, o):
            out.append(o)
            if stop:
                raise Stop
        return hook

    with torch.no_grad(), frozen_buffers(net):
        for layer, measured in pairs:
            for i in range(iterations + 1):
                out = []
                h = measured.register_forward_hook(grab(out))
                try:
                    net(x)
                except Stop:
                    pass
                h.remove()
                if i < iterations:
                    layer.weight.mul_(0.5 / float(out[0].std()))


def same_init(make, x, pairs=None):
    """Both inits on two copies of ``make()`` (seeded alike): equal weights and buffers, and the
    same random draws consumed."""
    nets, after = [], []
    for init in ("ours", "naive"):
        torch.manual_seed(3)
        net = make()
        nets.append(net)
        chosen = None if pairs is None else pairs(net)
        torch.manual_seed(5)
        if init == "ours":
            threshold_scaled_init(net, x, 0.5, targets=chosen)
        else:
            naive_threshold_init(net, x, pairs=chosen)
        after.append(torch.rand(4))
    same = all(torch.equal(a, b) for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()))
    return same and torch.equal(*after)


@pytest.mark.parametrize("block,norm,encoding", [("standard", "none", "direct"), ("ms", "none", "direct"),
                                                 ("sew", "none", "direct"), ("standard", "bn", "direct"),
                                                 ("standard", "tdbn", "direct"), ("standard", "none", "rate")])
def test_threshold_scaled_init_stopping_at_the_measured_layer_changes_nothing(block, norm, encoding):
    """The init ends each measuring pass at the measured layer and, for a net of pure modules
    (direct input), starts the passes after the first from the layer's recorded input; the
    init written plainly (every pass from ``x``) must give the same weights, bit for bit — with
    batch statistics in training mode, and with rate-coded input, where each pass draws new
    spikes (the same draws in both). Running the whole net instead of stopping gives them too."""
    x = images(16)
    whole = []
    for _ in range(2):
        torch.manual_seed(3)
        whole.append(SpikingResNet(small_layout(1, 4), T=2, in_channels=1, norm=norm, lif=LIF, block=block,
                                   encoding=encoding))
    threshold_scaled_init(whole[0], x, 0.5)
    naive_threshold_init(whole[1], x, stop=False)
    if encoding == "direct":  # with rate input the whole passes draw differently (the final measurement)
        assert all(torch.equal(a, b) for a, b in zip(whole[0].state_dict().values(), whole[1].state_dict().values()))
    assert same_init(lambda: SpikingResNet(small_layout(2, 8), T=2, in_channels=1, norm=norm, lif=LIF, block=block,
                                           encoding=encoding), x)
    net = SpikingResNet(small_layout(1, 4), T=2, in_channels=1, norm="none", lif=LIF)
    with pytest.raises(RuntimeError, match="was not called"):  # a target outside the forward pass is named
        threshold_scaled_init(net, x, 0.5, targets=[(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))])


def mlp(encoding="direct"):
    from compendium.spiking.layers import Encoder, MeanOverTime, SeqFold
    from compendium.spiking.neuron import LIF as LIFLayer

    return torch.nn.Sequential(Encoder(encoding, 2), SeqFold(torch.nn.Flatten(), torch.nn.Linear(196, 32)),
                               LIFLayer(**LIF), SeqFold(torch.nn.Linear(32, 16)), LIFLayer(**LIF),
                               SeqFold(torch.nn.Linear(16, 10)), MeanOverTime())


def test_threshold_scaled_init_with_hooks_or_outside_targets_runs_every_pass_from_x():
    """A hook that perturbs (noise on the first layer's output) or a target whose rescaled
    layer precedes the measured module (a linear layer measured at the neuron after it): the
    recorded input would be stale, so every pass runs from ``x`` — weights as the naive init's."""
    x = images(16)

    def noisy():
        net = mlp()
        net[1].register_forward_hook(lambda _m, _i, o: o + 0.1 * torch.randn_like(o))
        return net

    assert same_init(noisy, x)
    assert same_init(mlp, x, pairs=lambda net: [(net[1].module[1], net[2]), (net[3].module, net[4])])


@pytest.mark.parametrize("encoding,passes_per_layer", [("direct", 1), ("rate", 3)])
def test_threshold_scaled_init_reruns_the_net_only_where_a_pass_can_differ(encoding, passes_per_layer, monkeypatch):
    """Direct input through multi-step neurons: one pass from ``x`` per layer, then the layer
    alone on its recorded input. Random input (rate coding): every one of the
    ``iterations + 1`` passes runs from ``x``, and draws new spikes."""
    from compendium.spiking.layers import Encoder

    calls = []
    forward = Encoder.forward
    monkeypatch.setattr(Encoder, "forward", lambda self, x: calls.append(1) or forward(self, x))  # no hook: counted
    torch.manual_seed(0)
    stds = threshold_scaled_init(mlp(encoding), images(16), 0.5)
    assert len(calls) == 2 * passes_per_layer  # two layers measured (the classifier is not)
    if encoding == "direct":  # (rate input: each measurement sees new spikes)
        assert all(abs(s - 0.5) < 0.05 for s in stds)


def test_only_modules_known_to_be_pure_let_the_init_reuse_a_layers_input():
    from compendium.spiking.init import _pure_modules
    from compendium.spiking.layers import Encoder
    from compendium.spiking.neuron import LIF as LIFLayer

    assert _pure_modules(torch.nn.Sequential(Encoder("direct", 2), LIFLayer(**LIF)))
    assert not _pure_modules(LIFLayer(step_mode="single", **LIF))  # keeps its membrane between calls
    assert not _pure_modules(torch.nn.Sequential(Encoder("rate", 2)))  # draws new spikes at every call
    assert not _pure_modules(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout()))
    assert _pure_modules(torch.nn.ReLU()) and not _pure_modules(torch.nn.ReLU(inplace=True))

    class Custom(torch.nn.Linear):  # a subclass may override forward: not assumed pure
        pass

    assert not _pure_modules(Custom(2, 2))


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
