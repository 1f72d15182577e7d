"""The spiking core against plain references of its equations, and against snntorch."""

import math

import numpy as np
import pytest
import snntorch
import torch
from torch import nn

from compendium.spiking import (LIF, ArcTan, OpCounter, Rectangular, SeqFold, Sigmoid, direct, events_to_frames,
                                lif_sequence, lif_sequence_reference, lif_step, rate)
from compendium.spiking import surrogate as surrogates
from compendium.spiking.counters import conv2d_sops

RESETS = ["zero", "subtract", "subtract_decayed"]
SURROGATES = [Rectangular(1.0), Rectangular(0.4), ArcTan(2.0), Sigmoid(5.0)]


def stbp_by_hand(current, k, vth, reset):
    """The update written out with numpy, independent of the package."""
    I = current.numpy().astype(np.float64)
    u, o = np.zeros_like(I[0]), np.zeros_like(I[0])
    spikes, mems = [], []
    for t in range(len(I)):
        if reset == "zero":
            u = k * u * (1 - o) + I[t]
        elif reset == "subtract":
            u = k * u + I[t] - vth * o
        else:
            u = k * (u - vth * o) + I[t]
        o = (u > vth).astype(np.float64)
        spikes.append(o)
        mems.append(u)
    return np.stack(spikes), np.stack(mems)


@pytest.mark.parametrize("reset", RESETS)
def test_forward_equals_the_equation(reset):
    x = torch.randn(12, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.6
    s_ref, m_ref = stbp_by_hand(x, 0.6, 0.4, reset)
    for fn in (lif_sequence, lif_sequence_reference):
        s, m = fn(x, 0.6, 0.4, reset)
        np.testing.assert_array_equal(s.numpy(), s_ref)
        np.testing.assert_allclose(m.numpy(), m_ref, rtol=0, atol=1e-12)
    assert s_ref.sum() > 0 and (1 - s_ref).sum() > 0  # the test input makes some, not all, neurons fire


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("sg", SURROGATES, ids=repr)
def test_fused_bptt_equals_autograd(reset, detach, sg):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(10, 50, dtype=torch.float64, generator=g) * 0.5
    w_s, w_m = torch.randn(10, 50, dtype=torch.float64, generator=g), torch.randn(10, 50, dtype=torch.float64, generator=g)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    s1, m1 = lif_sequence(a, 0.7, 0.3, reset, detach, sg)
    s2, m2 = lif_sequence_reference(b, 0.7, 0.3, reset, detach, sg)
    ((s1 * w_s).sum() + (m1 * w_m).sum()).backward()
    ((s2 * w_s).sum() + (m2 * w_m).sum()).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    assert a.grad.abs().sum() > 0


def test_hand_derived_gradient_two_steps():
    """T=2, zero reset, gradient through the reset: dL/dI[0] for L = o[1], written out by hand."""
    k, vth = 0.5, 0.5
    sg = Rectangular(1.0)
    I = torch.tensor([[0.8], [0.4]], dtype=torch.float64, requires_grad=True)
    spikes, mems = lif_sequence(I, k, vth, "zero", False, sg)
    spikes[1].sum().backward()
    u0, u1, o0 = mems[0, 0].item(), mems[1, 0].item(), spikes[0, 0].item()
    h = lambda u: float(abs(u - vth) < 0.5)
    # u1 = k u0 (1 - o0) + I1, o0 = H(u0 - vth)  =>  du1/dI0 = k(1 - o0) - k u0 h(u0)
    expected = h(u1) * (k * (1 - o0) - k * u0 * h(u0))
    assert I.grad[0, 0].item() == pytest.approx(expected)
    assert I.grad[1, 0].item() == pytest.approx(h(u1))


@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_equals_snntorch_leaky(reset):
    """Where the equations coincide (reset detached), our neuron is snntorch's Leaky."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(15, 40, generator=g) * 0.5
    w = torch.randn(15, 40, generator=g)
    sg = Rectangular()
    ours = LIF(0.8, 0.4, reset=reset, detach_reset=True, surrogate=sg, record_mem=True)
    ref = snntorch.Leaky(beta=0.8, threshold=0.4, spike_grad=sg, reset_mechanism=reset)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    s1 = ours(a)
    mem, out, mems = ref.reset_mem(), [], []
    for t in range(15):
        s, mem = ref(b[t], mem)
        out.append(s)
        mems.append(mem)
    s2 = torch.stack(out)
    torch.testing.assert_close(s1, s2)
    torch.testing.assert_close(ours.mem_seq, torch.stack(mems))
    (s1 * w).sum().backward()
    (s2 * w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)
    assert isinstance(ours, snntorch.Leaky)


def test_single_step_mode_matches_multi_step():
    x = torch.randn(9, 4, 6) * 0.6
    multi = LIF(0.5, 0.5)(x)
    single = LIF(0.5, 0.5, step_mode="single")
    mem, out = None, []
    for t in range(9):
        s, mem = single(x[t], mem)
        out.append(s)
    torch.testing.assert_close(torch.stack(out), multi)


def test_learnable_decay_and_threshold_get_gradients():
    lif = LIF(0.5, 0.5, learn_decay=True, learn_threshold=True)
    x = torch.rand(6, 3, 8)
    lif(x).sum().backward()
    assert lif.beta.grad is not None and lif.threshold.grad is not None


@pytest.mark.parametrize("kwargs, match", [({"reset": "sideways"}, "reset"), ({"decay": 1.5}, "decay"),
                                           ({"step_mode": "both"}, "step_mode")])
def test_bad_neuron_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LIF(**kwargs)


def test_lif_step_returns_spike_and_membrane():
    s, u = lif_step(torch.tensor([0.7]), torch.tensor([0.0]), 0.5, 0.5)
    assert s.item() == 1.0 and u.item() == pytest.approx(0.7)


# --- surrogates -----------------------------------------------------------------------------
def test_surrogate_formulas():
    x = torch.linspace(-1.5, 1.5, 301, dtype=torch.float64)
    np.testing.assert_allclose(Rectangular(0.8).grad(x).numpy(), (np.abs(x.numpy()) < 0.4) / 0.8)
    a = 3.0
    np.testing.assert_allclose(ArcTan(a).grad(x).numpy(), (a / 2) / (1 + (math.pi / 2 * a * x.numpy()) ** 2))
    k = 4.0
    sig = 1 / (1 + np.exp(-k * x.numpy()))
    np.testing.assert_allclose(Sigmoid(k).grad(x).numpy(), k * sig * (1 - sig), rtol=1e-12)
    # each is the derivative of a step-like primitive: it integrates to one
    for sg in (Rectangular(0.8), ArcTan(a), Sigmoid(k)):
        xs = torch.linspace(-200, 200, 400_001, dtype=torch.float64)
        assert torch.trapezoid(sg.grad(xs), xs).item() == pytest.approx(1.0, abs=1e-2)


@pytest.mark.parametrize("ours, theirs", [(ArcTan(2.0), snntorch.surrogate.atan(2.0)),
                                          (Sigmoid(25.0), snntorch.surrogate.sigmoid(25.0))])
def test_surrogates_match_snntorch(ours, theirs):
    x = torch.linspace(-1, 1, 101)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours(a).sum().backward()
    theirs(b).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)
    assert torch.equal(ours(x), theirs(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("width", [1.0, 0.7])
def test_spike_and_window_are_the_comparisons_bit_for_bit(dtype, width):
    """The spike ``1[x > 0]`` and the rectangular window ``1[|x| < a/2] / a``, written into float
    tensors, equal the boolean comparisons converted; non-contiguous input, exact zeros, the
    window's edges and NaN included; the window carries no gradient, the spike the surrogate's."""
    sg = Rectangular(width)
    x = torch.randn(9, 12, dtype=dtype).t()  # a transposed (non-contiguous) input
    x[0, :4] = torch.tensor([0.0, width / 2, -width / 2, float("nan")], dtype=dtype)
    x = x.requires_grad_()
    spikes = sg(x)
    assert torch.equal(spikes, (x.detach() > 0).to(dtype)) and spikes.dtype == dtype
    window = sg.grad(x)
    assert torch.equal(window, (x.detach().abs() < width / 2).to(dtype) / width) and not window.requires_grad
    g = torch.randn_like(spikes)
    spikes.backward(g)
    assert torch.equal(x.grad, g * ((x.detach().abs() < width / 2).to(dtype) / width))


def test_surrogate_registry():
    assert isinstance(surrogates.get("arctan", 3.0), ArcTan)
    with pytest.raises(ValueError, match="unknown surrogate"):
        surrogates.get("tanh")
    with pytest.raises(ValueError):
        Rectangular(0)


# --- encoders -------------------------------------------------------------------------------
def test_direct_and_rate_coding():
    x = torch.tensor([[0.0, 0.25, 1.0]])
    d = direct(x, 5)
    assert d.shape == (5, 1, 3) and torch.equal(d[3], x)
    r = rate(x.expand(4000, 3), 10, torch.Generator().manual_seed(0))
    assert set(r.unique().tolist()) <= {0.0, 1.0}
    means = r.mean((0, 1))
    assert means[0] == 0 and means[2] == 1 and abs(means[1].item() - 0.25) < 0.01
    with pytest.raises(ValueError):
        rate(x, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rate_coding_is_the_comparison_of_the_draws_and_carries_no_gradient(dtype):
    """``1[U < clip(x, 0, 1)]`` with ``U`` torch.rand's draws from the given generator, in x's
    dtype and contiguous, for an input that requires grad too (the spikes do not)."""
    x = (torch.rand(6, 7, dtype=dtype) * 1.4 - 0.2).requires_grad_()
    r = rate(x, 5, torch.Generator().manual_seed(3))
    u = torch.rand((5, 6, 7), generator=torch.Generator().manual_seed(3), dtype=dtype)
    expected = (u < x.detach().clamp(0, 1)).to(dtype)
    assert torch.equal(r, expected) and r.dtype == dtype and r.is_contiguous()
    assert not r.requires_grad and x.grad is None


def test_events_to_frames():
    ev = np.array([[0.0, 1, 2, 1], [0.1, 1, 2, 1], [0.95, 3, 0, 0], [0.5, 0, 0, 1]])
    f = events_to_frames(ev, T=2, height=3, width=4, t_range=(0.0, 1.0), binary=False)
    assert f.shape == (2, 2, 3, 4)
    assert f[0, 1, 2, 1] == 2 and f[1, 0, 0, 3] == 1 and f[1, 1, 0, 0] == 1 and f.sum() == 4
    assert events_to_frames(ev, 2, 3, 4, (0.0, 1.0))[0, 1, 2, 1] == 1
    with pytest.raises(ValueError, match="out of range"):
        events_to_frames(np.array([[0.0, 9, 0, 1]]), 2, 3, 4)


# --- counters -------------------------------------------------------------------------------
def test_linear_sops_and_macs_by_hand():
    lin = nn.Linear(5, 3)
    x = torch.tensor([[1.0, 0, 1, 0, 0], [0, 0, 0, 0, 1]])
    with OpCounter(lin) as c:
        lin(x)
    ops, _ = c.summary(2)
    assert ops.loc[0, "dense MACs/sample (all steps)"] == 15  # 3 x 5
    assert ops.loc[0, "SOPs/sample"] == (2 + 1) * 3 / 2  # 3 non-zero inputs, each reaching 3 outputs, over 2 samples


def test_conv_sops_equal_a_brute_force_count():
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
    x = (torch.rand(2, 2, 7, 7, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    brute = 0
    xp = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for n in range(2):
        for i in range(4):
            for j in range(4):
                brute += int(xp[n, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3].sum()) * 3
    assert conv2d_sops(x, conv) == brute


def test_non_binary_input_is_counted_as_macs_and_spikes_are_counted():
    net = nn.Sequential(SeqFold(nn.Linear(4, 6)), LIF(0.5, 0.2), SeqFold(nn.Linear(6, 2)))
    x = torch.rand(5, 3, 4)  # analog input [T=5, B=3, 4]
    with OpCounter(net) as c:
        out = net(x)
        spikes = net[1](net[0](x))
    ops, spk = c.summary(3)
    assert ops.loc[0, "SOPs/sample"] is None or np.isnan(ops.loc[0, "SOPs/sample"])
    assert spk.loc[0, "neurons"] == 6 and spk.loc[0, "T"] == 5
    # the hook saw two forward passes of the LIF layer with the same spikes
    assert spk.loc[0, "firing rate"] == pytest.approx(float(spikes.detach().mean()))
    assert out.shape == (5, 3, 2)


@pytest.mark.parametrize("sg", SURROGATES, ids=repr)
def test_in_place_derivative_equals_the_formula(sg):
    x = torch.linspace(-2, 2, 1001, dtype=torch.float64)
    torch.testing.assert_close(sg.grad_(x.clone()), sg.grad(x))


def test_ann_equivalent_macs_are_per_single_pass():
    """A layer folded over T steps does T times an ANN's work; totals divide it back out."""
    net = nn.Sequential(SeqFold(nn.Linear(4, 6)), LIF(0.5, 0.2))
    x = (torch.rand(5, 3, 4) < 0.5).float()  # [T=5, B=3, 4]
    with OpCounter(net) as c:
        net(x)
    t = c.totals(3, time_steps=5)
    assert t["ann_macs"] == 4 * 6
    assert t["snn_sops"] == float(x.sum()) * 6 / 3
    with pytest.raises(ValueError):
        c.totals(3, time_steps=0)


def _lif_run(x: torch.Tensor, use_native: bool, monkeypatch, kwargs: dict, with_mem_grad: bool):
    from compendium.spiking import native

    with monkeypatch.context() as m:
        if not use_native:
            m.setattr(native, "supports", lambda current: False)
        leaf = x[0].detach().clone().requires_grad_() if x.stride(0) == 0 else x.detach().clone().requires_grad_()
        inp = leaf.unsqueeze(0).expand(x.shape) if x.stride(0) == 0 else leaf
        s, mem = lif_sequence(inp, **kwargs)
        g = torch.Generator().manual_seed(3)
        loss = (s * torch.randn(s.shape, generator=g)).sum()
        if with_mem_grad:
            loss = loss + (mem * torch.randn(mem.shape, generator=g)).sum()
        loss.backward()
    return s.detach(), mem.detach(), leaf.grad


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "repeated"])
@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("sg", SURROGATES, ids=repr)
def test_native_kernel_equals_the_eager_kernel(layout, reset, detach, sg, monkeypatch):
    """The compiled LIF kernel (float32 on the CPU) gives the eager kernel's spikes, membranes and
    gradients; bit for bit where PyTorch's kernels use fused multiply-adds (AVX2/AVX-512 builds)."""
    from compendium.spiking import native

    if native.library() is None:
        pytest.skip("no C compiler: the eager kernel runs")
    x = torch.randn(5, 6, 3, 7, 9, generator=torch.Generator().manual_seed(4)) * 0.6 + 0.3
    if layout == "channels_last":
        x = x.reshape(30, 3, 7, 9).contiguous(memory_format=torch.channels_last).view(5, 6, 3, 7, 9)
    elif layout == "repeated":  # one input slice for every step (direct coding, static graph features)
        x = x[0].unsqueeze(0).expand(x.shape)
    assert native.supports(x)
    kwargs = dict(decay=0.3, threshold=0.45, reset=reset, detach_reset=detach, surrogate=sg)
    for with_mem_grad in (False, True):
        ours = _lif_run(x, True, monkeypatch, kwargs, with_mem_grad)
        eager = _lif_run(x, False, monkeypatch, kwargs, with_mem_grad)
        assert torch.equal(ours[0], eager[0]) and ours[0].sum() > 0
        if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
            for a, b in zip(ours[1:], eager[1:]):
                assert torch.equal(a, b)
        else:
            for a, b in zip(ours[1:], eager[1:]):
                torch.testing.assert_close(a, b)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit, NaN where NaN (its payload aside) and the sign of every zero included."""
    nan_a, nan_b = torch.isnan(a), torch.isnan(b)
    return torch.equal(nan_a, nan_b) and torch.equal(a[~nan_a].view(torch.int32), b[~nan_b].view(torch.int32))


@pytest.mark.parametrize("T", [1, 5])
@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("sg", [Rectangular(1.0), Rectangular(0.5), ArcTan(2.0)], ids=repr)
@pytest.mark.parametrize("grads", ["spikes", "membranes", "both"])
def test_native_kernel_equals_the_eager_kernel_on_special_values(T, reset, detach, sg, grads, monkeypatch):
    """The compiled kernel's selects (spike, surrogate window, gradient paths) vectorise as blends
    (-fno-trapping-math); they must keep the eager kernel's values bit for bit where a blend and
    a branch could differ: NaN and ±inf in the current and in the incoming gradients (also where
    they meet NaN/inf membranes), ±0, denormals, and membranes exactly at the threshold and at
    the window's edges at t=0 (threshold 0.5, half-widths 0.5 and 0.25: exact in float32); each
    gradient alone (the other None) and both; T=1 (no recurrence); a slice of 4 x 67 floats, so
    that the vector loops' scalar tails meet special values too."""
    from compendium.spiking import native

    if native.library() is None:
        pytest.skip("no C compiler: the eager kernel runs")
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip("bit-for-bit equality needs PyTorch's fused multiply-add kernels (AVX2/AVX-512)")
    g = torch.Generator().manual_seed(11)
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 0.5, 1.0, 0.75, 0.25,
                            0.5 + 2**-24, 0.5 - 2**-25, 3e38, -3e38, 1e-45, -1e-45])
    m = special.numel()
    x = torch.randn(T, 4, 67, generator=g) * 0.6 + 0.3
    x[:, 0, :m] = special  # every step, so that NaN and inf run through the recurrence
    x[:, 0, -m:] = special  # and through the loops' scalar tails
    x[0, 1, :m] = special[torch.randperm(m, generator=g)]
    grad_s, grad_m = torch.randn(x.shape, generator=g), torch.randn(x.shape, generator=g)
    odd = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e-45])
    for grad in (grad_s, grad_m):
        grad[:, 2, :6] = odd
        grad[:, 0, -6:] = odd.flip(0)  # special gradients on special membranes
        grad[:, 1, 3:9] = odd
    wanted = {"spikes": (grad_s, None), "membranes": (None, grad_m), "both": (grad_s, grad_m)}[grads]
    kwargs = dict(decay=0.3, threshold=0.5, reset=reset, detach_reset=detach, surrogate=sg)
    assert native.supports(x)
    calls = []
    real = native.backward
    monkeypatch.setattr(native, "backward", lambda *a: (calls.append(1), real(*a))[1])

    def run(use_native: bool):
        with monkeypatch.context() as m:
            if not use_native:
                m.setattr(native, "supports", lambda current: False)
            leaf = x.clone().requires_grad_()
            s, mem = lif_sequence(leaf, **kwargs)
            pairs = [(out, gr) for out, gr in zip((s, mem), wanted) if gr is not None]
            torch.autograd.backward([o for o, _ in pairs], [gr for _, gr in pairs])
        return s.detach(), mem.detach(), leaf.grad

    ours = run(True)
    assert calls == [1]  # the compiled backward ran (the eager one below does not call it)
    eager = run(False)
    assert calls == [1] and torch.isinf(eager[1]).any() and torch.isnan(eager[1]).any()
    for name, a, b in zip(("spikes", "membranes", "grad"), ours, eager):
        assert _same_bits(a, b), name


def _static_rate_run(current, T, kw, bits, thr, scale, use_native, monkeypatch):
    from compendium.spiking import native
    from compendium.spiking.neuron import lif_static_rate

    with monkeypatch.context() as m:
        if not use_native:
            m.setattr(native, "supports_static_rate", lambda *a: False)
        x = current.clone().requires_grad_()
        r = lif_static_rate(x, T, **kw, keep_bits=bits, keep_threshold=thr, keep_scale=scale)
        r.backward(torch.randn(r.shape, generator=torch.Generator().manual_seed(5)))
    return r.detach(), x.grad


@pytest.mark.parametrize("T", [1, 3, 8])
@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_static_rate_is_the_dropped_out_mean_of_the_spikes_native_and_eager_alike(T, reset, detach, p, monkeypatch):
    """lif_static_rate(I, T) = mean_t(o_t · m_t) of the LIF under I at every step, value and gradient
    (against the composition lif_sequence → mask → mean, by autograd); the compiled kernel and
    the eager twin agree bit for bit."""
    from compendium.graph.layers import dropout_bits
    from compendium.spiking import native

    g = torch.Generator().manual_seed(1)
    current = torch.randn(40, 37, generator=g) * 0.8 + 0.6
    torch.manual_seed(2)
    bits, thr = dropout_bits((T, 40, 37), p) if p else (None, 0)
    scale = 1.0 / (1.0 - p) if p else 1.0
    kw = dict(decay=0.4, threshold=0.5, reset=reset, detach_reset=detach)
    eager = _static_rate_run(current, T, kw, bits, thr, scale, False, monkeypatch)
    x = current.clone().requires_grad_()
    spikes, _ = lif_sequence(x.unsqueeze(0).expand(T, *x.shape), **kw)
    mask = torch.ge(bits, thr).float() * scale if p else torch.ones_like(spikes)
    ref = (spikes * mask).mean(0)
    ref.backward(torch.randn(ref.shape, generator=torch.Generator().manual_seed(5)))
    torch.testing.assert_close(eager[0], ref.detach())
    torch.testing.assert_close(eager[1], x.grad)
    assert 0 < float(eager[0].count_nonzero()) < eager[0].numel() and float(eager[1].abs().sum()) > 0
    if p:  # about a fraction p of the spikes is dropped
        kept = float((mask * spikes).count_nonzero()) / float(spikes.count_nonzero())
        assert abs(kept - (1 - p)) < 0.1
    if native.library() is not None:
        ours = _static_rate_run(current, T, kw, bits, thr, scale, True, monkeypatch)
        assert torch.equal(ours[0], eager[0]) and torch.equal(ours[1], eager[1])


def test_static_rate_refuses_a_mask_of_the_wrong_shape():
    from compendium.spiking.neuron import lif_static_rate

    with pytest.raises(ValueError, match="keep_bits must have shape"):
        lif_static_rate(torch.zeros(4, 3), 5, 0.5, 0.5, keep_bits=torch.zeros(4, 4, 3, dtype=torch.int16))


def _pool_run(x: torch.Tensor, fused: bool, kwargs: dict):
    from compendium.spiking import lif_maxpool2d

    leaf = x[0].detach().clone().requires_grad_() if x.stride(0) == 0 else x.detach().clone().requires_grad_()
    inp = leaf.unsqueeze(0).expand(x.shape) if x.stride(0) == 0 else leaf
    if fused:
        out = lif_maxpool2d(inp, **kwargs)
    else:
        s, _ = lif_sequence(inp, **kwargs)
        out = nn.functional.max_pool2d(s.reshape(-1, *s.shape[2:]), 2).reshape(*s.shape[:2], -1,
                                                                               s.shape[3] // 2, s.shape[4] // 2)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    g.view(-1)[::5] = -0.0  # max_pool2d's backward adds onto zeros: a -0 arrives as +0
    out.backward(g)
    return out.detach(), leaf.grad


@pytest.mark.parametrize("shape", [(4, 3, 5, 8, 6), (3, 2, 4, 7, 6), (1, 2, 3, 2, 2), (2, 2, 16, 48, 48)], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "repeated"])
@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("detach", [False, True])
def test_lif_maxpool2d_equals_lif_then_max_pool(shape, layout, reset, detach, monkeypatch):
    """The fused LIF + 2×2 max pooling gives lif_sequence → max_pool2d bit for bit: pooled spikes,
    the gradient w.r.t. the current (routed to each window's first spiking element, as
    max_pool2d routes it) and the memory format; the compiled kernel runs on even-sized
    channels-last input, the composition elsewhere (odd sizes, NCHW). Four kernel threads: the
    largest shape's slices (73,728 floats) split into four chunks of pooled rows."""
    from compendium.spiking import native

    monkeypatch.setenv("COMPENDIUM_NATIVE_THREADS", "4")
    calls = []
    real = native.pool_forward
    monkeypatch.setattr(native, "pool_forward", lambda *a: (calls.append(1), real(*a))[1])
    T, N, C, H, W = shape
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(4)) * 0.6 + 0.35
    if layout in ("channels_last", "repeated"):
        x = x.reshape(T * N, C, H, W).contiguous(memory_format=torch.channels_last).view(shape)
    if layout == "repeated":
        x = x[0].unsqueeze(0).expand(shape)
    kwargs = dict(decay=0.3, threshold=0.45, reset=reset, detach_reset=detach, surrogate=Rectangular(1.0))
    ours, ref = _pool_run(x, True, kwargs), _pool_run(x, False, kwargs)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape and a.stride() == b.stride() and torch.equal(a, b)
        assert torch.equal(torch.signbit(a), torch.signbit(b))  # zeros of the same sign too
    if T > 1:  # windows that stay silent, and windows where several elements spike (ties to route)
        s, _ = lif_sequence(x, **kwargs)
        per_window = nn.functional.avg_pool2d(s.reshape(T * N, C, H, W), 2) * 4
        assert float((per_window == 0).sum()) > 0 and float((per_window >= 2).sum()) > 0
    kernel = native.library() is not None and layout != "contiguous" and H % 2 == 0 and W % 2 == 0
    assert bool(calls) == kernel


def test_lif_maxpool2d_reads_a_channels_last_or_time_broadcast_gradient_in_place(monkeypatch):
    """The pooled gradient enters the kernel without a copy when its slices are channels-last,
    densely stacked or the same slice at every step (time stride 0, e.g. the gradient of a sum
    over steps); either way the gradient equals the composition's."""
    from compendium.spiking import lif_maxpool2d, native

    if native.library() is None:
        pytest.skip("no C compiler here: the eager kernel runs (tested elsewhere)")
    T, N, C, H, W = 3, 2, 5, 6, 8
    cl = lambda t: t.reshape(-1, *t.shape[-3:]).contiguous(memory_format=torch.channels_last).view(t.shape)  # noqa: E731
    x = cl(torch.randn(T, N, C, H, W, generator=torch.Generator().manual_seed(5)) * 0.6 + 0.35)
    kwargs = dict(decay=0.3, threshold=0.45, reset="zero", detach_reset=False, surrogate=Rectangular(1.0))
    g = cl(torch.randn(T, N, C, H // 2, W // 2, generator=torch.Generator().manual_seed(6)))
    w = cl(torch.randn(1, N, C, H // 2, W // 2, generator=torch.Generator().manual_seed(7)))[0]
    copies = []
    real = native._empty
    monkeypatch.setattr(native, "_empty", lambda *a: (copies.append(a[0]), real(*a))[1])
    for loss in (lambda out: (out * g).sum(), lambda out: (out.sum(0) * w).sum()):
        grads = []
        for fused in (True, False):
            leaf = x.detach().clone().requires_grad_()
            if fused:
                copies.clear()
                out = lif_maxpool2d(leaf, **kwargs)
                made = len(copies)
                loss(out).backward()
                assert len(copies) == made  # the backward pass allocated no copy of the gradient
            else:
                s, _ = lif_sequence(leaf, **kwargs)
                out = nn.functional.max_pool2d(s.reshape(-1, C, H, W), 2).reshape(T, N, C, H // 2, W // 2)
                loss(out).backward()
            grads.append(leaf.grad)
        assert torch.equal(*grads) and torch.equal(torch.signbit(grads[0]), torch.signbit(grads[1]))


def test_lif_maxpool2d_refuses_non_image_sequences():
    from compendium.spiking import lif_maxpool2d

    with pytest.raises(ValueError, match=r"\[T, N, C, H, W\]"):
        lif_maxpool2d(torch.rand(4, 2, 8, 8), 0.5, 0.5)


def test_spiking_body_fuses_lif_and_pooling_unless_hooks_observe_them(monkeypatch):
    """SpikingClassifier runs each LIF → max-pool pair fused when nothing observes the layers and
    one layer at a time under hooks (OpCounter, activity penalties): the same logits and
    parameter gradients either way, and the hooks still see every layer."""
    import copy

    from compendium.spiking import native
    from compendium.spiking.nets import spiking_convnet

    calls = []
    real = native.pool_forward
    monkeypatch.setattr(native, "pool_forward", lambda *a: (calls.append(a[0].shape), real(*a))[1])
    torch.manual_seed(0)
    net = spiking_convnet(T=3, channels=(4, 6), hidden=16, encoding="direct").to(memory_format=torch.channels_last)
    twin = copy.deepcopy(net)
    x = torch.rand(5, 1, 28, 28)
    y = torch.randint(0, 10, (5,))
    logits = net(x)
    nn.functional.cross_entropy(logits, y).backward()
    fused_calls = len(calls)
    calls.clear()
    with OpCounter(twin) as c:
        hooked_logits = twin(x)
        nn.functional.cross_entropy(hooked_logits, y).backward()
    assert not calls and c.totals(5)["snn_sops"] > 0
    assert fused_calls == (2 if native.library() is not None else 0)
    assert torch.equal(logits, hooked_logits)
    for (name, a), (_, b) in zip(net.named_parameters(), twin.named_parameters()):
        assert torch.equal(a.grad, b.grad), name
    assert list(net.state_dict()) == list(twin.state_dict())


def test_the_kernel_asks_for_512_bit_vectors_only_on_x86_with_avx512(monkeypatch):
    """-mprefer-vector-width is an x86 option (GCC elsewhere rejects it, and the build would fall
    back to the eager kernel): it is passed only where the CPU has AVX-512."""
    from compendium.spiking import native

    cases = [("x86_64", "flags : fpu sse avx2 avx512f avx512bw", ["-mprefer-vector-width=512"]),
             ("x86_64", "flags : fpu sse avx2 fma", []),
             ("aarch64", "Features : fp asimd sve avx512f", [])]
    for machine, flags, expected in cases:
        monkeypatch.setattr(native.platform, "machine", lambda m=machine: m)
        monkeypatch.setattr(native, "_cpu_flags", lambda f=flags: f)
        assert native._vector_width_flags() == expected


def test_a_compiler_that_rejects_the_vector_width_still_builds_the_kernel(monkeypatch, tmp_path):
    import subprocess

    from compendium.spiking import native

    if native.library() is None:
        pytest.skip("no C compiler here: the eager kernel runs (tested elsewhere)")
    real, tried = subprocess.run, []

    def run(cmd, *a, **kw):
        if "-o" in cmd:
            tried.append(cmd)
            if "-mprefer-vector-width=512" in cmd:
                raise subprocess.CalledProcessError(1, cmd, stderr="unrecognized option")
        return real(cmd, *a, **kw)

    monkeypatch.setenv("COMPENDIUM_NATIVE_CACHE", str(tmp_path))
    monkeypatch.setattr(native.subprocess, "run", run)
    monkeypatch.setattr(native, "_vector_width_flags", lambda: ["-mprefer-vector-width=512"])
    lib = native._build()
    assert lib is not None and len(tried) == 3  # with the width (OpenMP, then not), then without it
    assert "-mprefer-vector-width=512" not in tried[-1] and "-fopenmp" in tried[-1]
