"""Graph layers against dense references, STFN against its formula, the cost model by hand."""

import pytest
import torch
from torch_geometric.nn import GCNConv

from compendium.graph import STFN, GCN, NodeClassifier, SpikingGCNConv, SpikingGNN, normalized_adjacency
from compendium.graph.cost import gcn_ops
from compendium.graph.layers import SparseOperator, propagate
from compendium.graph.models import encode_features
from compendium.learning import fit

EDGES = torch.tensor([[0, 1, 1, 2, 2, 3, 3, 4], [1, 0, 2, 1, 3, 2, 4, 3]])  # a path of 5 nodes


def dense_gcn_adjacency(edge_index, n):
    a = torch.zeros(n, n)
    a[edge_index[0], edge_index[1]] = 1
    a = a + torch.eye(n)
    d = a.sum(1).rsqrt()
    return d[:, None] * a * d[None, :]


def test_normalised_adjacency_equals_the_dense_formula():
    torch.testing.assert_close(normalized_adjacency(EDGES, 5).to_dense(), dense_gcn_adjacency(EDGES, 5))


def test_propagation_matches_pyg_gcnconv():
    torch.manual_seed(0)
    x = torch.rand(5, 3)
    conv = GCNConv(3, 4)
    ours = propagate(normalized_adjacency(EDGES, 5), x @ conv.lin.weight.t()) + conv.bias
    torch.testing.assert_close(ours, conv(x, EDGES))
    seq = torch.rand(2, 5, 3)  # [T, N, F] in one sparse product
    a = dense_gcn_adjacency(EDGES, 5)
    torch.testing.assert_close(propagate(normalized_adjacency(EDGES, 5), seq), torch.stack([a @ seq[0], a @ seq[1]]))


def test_stfn_equals_its_formula():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(4, 5, 6, generator=g, dtype=torch.float64) * 3 + 1
    norm = STFN(5, threshold=0.5, rho=2.0).double()
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 6.0).view(5, 1))
        norm.bias.fill_(0.25)
    mean = s.mean(dim=(0, 2), keepdim=True)
    var = s.var(dim=(0, 2), unbiased=False, keepdim=True)
    expected = torch.arange(1.0, 6.0, dtype=torch.float64).view(1, 5, 1) * (2.0 * 0.5 * (s - mean) / torch.sqrt(var + 1e-5)) + 0.25
    torch.testing.assert_close(norm(s), expected)
    norm(s).sum().backward()
    assert norm.rho.grad is not None  # rho is learned
    one = s[:1]  # a static input: one step, statistics over the features alone
    mean1, var1 = one.mean(dim=(0, 2), keepdim=True), one.var(dim=(0, 2), unbiased=False, keepdim=True)
    torch.testing.assert_close(norm(one), norm.weight.view(1, 5, 1) * (norm.rho * 0.5 * (one - mean1) / torch.sqrt(var1 + 1e-5))
                               + norm.bias.view(1, 5, 1))
    torch.autograd.gradcheck(lambda z: norm(z), (s.clone().requires_grad_(),))
    with pytest.raises(ValueError):
        norm(torch.zeros(4, 3, 6))


def test_spiking_gcn_layer_matches_a_dense_reference_and_reuses_static_input():
    torch.manual_seed(0)
    x = (torch.rand(5, 7) < 0.4).float()
    layer = SpikingGCNConv(7, 3, T=4, num_nodes=5, stfn=False, lif={"decay": 0.5, "threshold": 0.2, "step_mode": "multi"})
    adj = normalized_adjacency(EDGES, 5)
    out_static = layer(x, adj)
    out_seq = layer(x.unsqueeze(0).expand(4, -1, -1), adj)  # the same input given explicitly per step
    torch.testing.assert_close(out_static, out_seq)
    torch.testing.assert_close(layer(x.to_sparse(), adj), out_static)
    from compendium.spiking import lif_sequence
    s = dense_gcn_adjacency(EDGES, 5) @ (x @ layer.linear.weight.t()) + layer.bias
    ref, _ = lif_sequence(s.unsqueeze(0).expand(4, -1, -1), 0.5, 0.2)
    torch.testing.assert_close(out_static, ref)


def test_feature_encodings():
    x = torch.tensor([[0.0, 0.5, 2.0]])
    assert torch.equal(encode_features(x, 3, "threshold", level=0.4), torch.tensor([[0.0, 1.0, 1.0]]))
    b = encode_features(x.expand(2000, 3), 5, "bernoulli", torch.Generator().manual_seed(0))
    assert b.shape == (5, 2000, 3) and abs(float(b[..., 1].mean()) - 0.25) < 0.02 and float(b[..., 2].mean()) == 1.0
    with pytest.raises(ValueError):
        encode_features(x, 3, "poisson")


def test_cost_model_by_hand():
    ops = gcn_ops(num_nodes=10, nnz_adj=30, in_features=100, nnz_x=50, hidden=4, classes=3, T=5, hidden_spikes=20)
    assert ops["ANN GCN"]["MAC"] == 50 * 4 + 30 * 4 + 10 * 4 * 3 + 30 * 3
    assert ops["GC-SNN"]["AC"] == 50 * 4 + 20 * 3
    assert ops["GC-SNN"]["MAC"] == 30 * 4 + 30 * 3  # the linear readout aggregates once (what the model computes)
    per_step = gcn_ops(10, 30, 100, 50, 4, 3, T=5, hidden_spikes=20, reuse=False, readout_once=False, stfn=True)
    assert per_step["GC-SNN"]["MAC"] == 30 * 4 * 5 + 30 * 3 * 5 + 4 * 10 * 4 * 5 and per_step["GC-SNN"]["AC"] == 50 * 4 * 5 + 20 * 3
    assert gcn_ops(10, 30, 100, 50, 4, 3, T=5, hidden_spikes=20, stfn=True)["GC-SNN"]["MAC"] == 30 * 4 + 30 * 3 + 4 * 10 * 4


def test_node_classifier_trains_through_the_shared_loop():
    torch.manual_seed(0)
    n = 40
    y = torch.arange(n) % 2
    x = torch.nn.functional.one_hot(y, 2).float().repeat(1, 3)
    src = torch.arange(n - 2)
    edges = torch.cat([torch.stack([src, src + 2]), torch.stack([src + 2, src])], 1)  # same-label neighbours
    idx = torch.arange(n)
    for net in (GCN(6, 8, 2, 0.0), SpikingGNN("gcn", 6, 8, 2, n, 4, stfn=True,
                                           lif={"decay": 0.5, "threshold": 0.5}, dropout=0.0)):
        clf = NodeClassifier(net, x, edges, n)
        hist = fit(clf, (idx[:20], y[:20]), test=(idx[20:], y[20:]), epochs=30, lr=0.05, batch_size=20,
                   eval_batch_size=n, show_progress=False)
        assert hist.last("test_acc") == 1.0


def _run(dataset, model, seed, val, test_acc=0.8, ops=None):
    from compendium.graph.experiment import NodeRun
    from compendium.learning import History

    hist = History([{"epoch": i + 1, "val_acc": v} for i, v in enumerate(val)])
    return NodeRun(dataset, model, seed, test_acc, 1, hist, ops, None)


def test_convergence_censors_a_model_that_never_reaches_the_level():
    from compendium.graph.experiment import convergence_quantity, convergence_table

    runs = [_run("cora", "gc-snn+stfn", 0, [0.5, 0.8, 0.8]), _run("cora", "gc-snn", 0, [0.3, 0.4, 0.5]),  # never: STFN first
            _run("cora", "gc-snn+stfn", 1, [0.5, 0.8, 0.8]), _run("cora", "gc-snn", 1, [0.3, 0.75, 0.8]),  # tie: not first
            _run("cora", "gc-snn+stfn", 2, [0.2, 0.5, 0.8]), _run("cora", "gc-snn", 2, [0.75, 0.8, 0.8])]  # plain first
    t = convergence_table(runs)
    assert t["epochs without"].isna().tolist() == [True, False, False] and t["censored without"].tolist() == [True, False, False]
    assert t["STFN first"].tolist() == [True, False, False]
    q = convergence_quantity(t)
    assert (q.estimate, q.n, q.method) == (pytest.approx(1 / 3), 3, "wilson")
    assert convergence_quantity(convergence_table(runs[:1])) is None


def test_claim_quantities_pair_seeds_and_explain_what_is_missing():
    from compendium.graph.experiment import accuracy_quantities, claim_unavailable, energy_ratio_quantities

    ops_snn, ops_gcn = {"MAC": 10.0, "AC": 100.0}, {"MAC": 40.0, "AC": 0.0}
    runs = [_run("cora", "gcn", s, [0.5], 0.80 + s / 100, ops_gcn) for s in (1, 0)] + \
           [_run("cora", "gc-snn+stfn", s, [0.5], 0.78 + s / 100, {**ops_snn, "AC": 100.0 * (s + 1)}) for s in (0, 1)]
    acc = {q.name: q for q in accuracy_quantities(runs)}
    assert acc["acc_cora_gcn"].samples == (0.80, 0.81) and acc["acc_cora_gc_snn_stfn"].samples == (0.78, 0.79)
    energy = lambda macs, acs: 2 * macs + acs
    (ratio,) = energy_ratio_quantities(runs, energy)
    assert ratio.name == "energy_ratio_cora" and ratio.samples == (120 / 80, 220 / 80)
    why = claim_unavailable(["acc_citeseer_gcn", "acc_cora_gat", "acc_pubmed_gcn", "energy_ratio_citeseer", "stfn_first_rate"],
                            ["cora"], {"pubmed": "allx missing"}, ["gcn", "gc-snn+stfn"])
    assert "not in this run's datasets" in why["acc_citeseer_gcn"] and "gat is not in this run's models" in why["acc_cora_gat"]
    assert why["acc_pubmed_gcn"] == "pubmed: allx missing" and "citeseer" in why["energy_ratio_citeseer"]
    assert "gc-snn" in why["stfn_first_rate"]


def test_sparse_operator_matches_dense_products_and_gradients():
    from compendium.graph import SparseOperator

    g = torch.Generator().manual_seed(0)
    a = torch.rand(6, 4, generator=g) * (torch.rand(6, 4, generator=g) < 0.5)
    op = SparseOperator(a.to_sparse())
    assert op.nnz == int((a != 0).sum())
    torch.testing.assert_close(op.to_dense(), a)
    h = torch.randn(4, 3, generator=g, requires_grad=True)
    out = op(h)
    torch.testing.assert_close(out, a @ h.detach())
    w = torch.randn(6, 3, generator=g)
    (out * w).sum().backward()
    torch.testing.assert_close(h.grad, a.t() @ w)  # Aᵀ g from the stored transpose
    # value dropout: the same mask on A and on Aᵀ (h = I makes the forward the dropped matrix itself)
    torch.manual_seed(1)
    eye = torch.eye(4, requires_grad=True)
    a_drop = op(eye, value_dropout=0.5, training=True)
    w4 = torch.randn(6, 4, generator=g)
    a_drop.backward(w4)
    torch.testing.assert_close(eye.grad, a_drop.detach().t() @ w4)
    assert set(torch.unique(a_drop.detach()[a != 0] / a[a != 0]).tolist()) <= {0.0, 2.0}
    torch.testing.assert_close(op(eye, value_dropout=0.5, training=False), a)


def test_csr_product_equals_the_matmul_bit_for_bit_and_ignores_the_uninitialised_output():
    """csr_matmul writes an uninitialised result once (MKL's beta = 0 never reads it): the same
    numbers as ``a @ h``, empty rows and an all-zero matrix included, even where the memory it
    reuses held NaN."""
    from compendium.graph.layers import csr_matmul

    g = torch.Generator().manual_seed(0)
    dense = torch.randn(40, 30, generator=g) * (torch.rand(40, 30, generator=g) < 0.1)
    dense[[3, 17]] = 0.0  # rows without entries
    for a in (dense, torch.zeros(6, 30)):
        csr = a.to_sparse_csr()
        csr32 = torch.sparse_csr_tensor(csr.crow_indices().int(), csr.col_indices().int(), csr.values(), csr.shape)
        for h in (torch.randn(30, 16, generator=g), torch.randn(16, 30, generator=g).t()):  # contiguous and not
            for m in (csr, csr32):
                del_me = torch.full((a.shape[0], h.shape[1]), float("nan"))  # memory the result may reuse
                del del_me
                out = csr_matmul(m, h)
                assert torch.equal(out, csr @ h) and not out.isnan().any()


def test_sparse_operator_holds_32_bit_indices_and_the_transposed_values_through_a_state_dict():
    from compendium.graph import SparseOperator

    g = torch.Generator().manual_seed(1)
    a = torch.rand(7, 5, generator=g) * (torch.rand(7, 5, generator=g) < 0.5)
    op = SparseOperator(a.to_sparse())
    assert op.crow.dtype == op.col.dtype == op.crow_t.dtype == op.col_t.dtype == torch.int32
    assert torch.equal(op.values_t, op.values[op.perm]) and "values_t" not in op.state_dict()
    other = SparseOperator((a * 3).to_sparse())
    old = {k: (v.long() if k in ("crow", "col", "crow_t", "col_t") else v) for k, v in other.state_dict().items()}
    op.load_state_dict(old)  # a state saved with 64-bit indices and without values_t
    assert op.crow.dtype == torch.int32 and torch.equal(op.values_t, op.values[op.perm])
    h = torch.randn(5, 3, generator=g, requires_grad=True)
    w = torch.randn(7, 3, generator=g)
    (op(h) * w).sum().backward()
    torch.testing.assert_close(h.grad, (a * 3).t() @ w)  # the gradient reads the reloaded transpose
    with torch.no_grad():
        torch.testing.assert_close(op(h), (a * 3) @ h)


def test_static_stfn_is_the_one_step_stfn_bit_for_bit():
    g = torch.Generator().manual_seed(2)
    norm = STFN(9, threshold=0.5, rho=1.5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=g)
        norm.bias.uniform_(-0.2, 0.2, generator=g)
    s = torch.randn(9, 12, generator=g)
    w = torch.randn(9, 12, generator=g)
    outs = []
    for static in (True, False):
        norm.zero_grad()
        x = s.clone().requires_grad_()
        if static:
            y = norm.static(x)
        else:  # STFN's one-step computation as it was: layer norm of s[0], back to [1, N, C], the affine
            z = torch.nn.functional.layer_norm(x.unsqueeze(0)[0], (12,), eps=norm.eps).unsqueeze(0)
            y = torch.addcmul(norm.bias, norm.weight * (norm.rho * norm.threshold), z)[0]
        (y * w).sum().backward()
        outs.append((y.detach(), x.grad, norm.weight.grad.clone(), norm.bias.grad.clone(), norm.rho.grad.clone()))
    assert all(torch.equal(u, v) for u, v in zip(*outs))
    assert torch.equal(norm(s.unsqueeze(0))[0], norm.static(s))
    with pytest.raises(ValueError, match="STFN.static expects"):
        norm.static(torch.zeros(1, 9, 12))


def test_fast_dropout_keeps_one_minus_p_and_rescales():
    from compendium.graph.layers import dropout

    torch.manual_seed(0)
    x = torch.ones(8, 1000, 64)
    y = dropout(x, 0.1, True)
    assert torch.unique(y).tolist() == pytest.approx([0.0, 1 / 0.9])
    assert abs(float((y > 0).float().mean()) - 0.9) < 0.003
    assert dropout(x, 0.1, False) is x and dropout(x, 0.0, True) is x
    z = torch.ones(5, 7, requires_grad=True)  # odd sizes: the 16-bit slices are cut to the tensor
    dropout(z, 0.5, True).sum().backward()
    assert set(torch.unique(z.grad).tolist()) <= {0.0, 2.0}
    with pytest.raises(ValueError):
        dropout(x, 1.0, True)


def _splitmix64(key: int, i: int) -> int:
    """SplitMix64's word for the state key + (i + 1) γ, in Python integers (the reference)."""
    m = (1 << 64) - 1
    z = (key + (i + 1) * 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


@pytest.mark.parametrize("key", [0, 1, -5, 2 ** 63 - 1, -(2 ** 63), 12345678901234567])
def test_random_words_are_splitmix64_native_and_eager_alike(key, monkeypatch):
    from compendium.spiking import native

    words = native.random_words(200_000, key)  # long enough for the kernel to split it over threads
    assert [w % (1 << 64) for w in words[:50].tolist()] == [_splitmix64(key % (1 << 64), i) for i in range(50)]
    assert words[-1].item() % (1 << 64) == _splitmix64(key % (1 << 64), 199_999)
    if key == 0:  # SplitMix64's published first output for seed 0
        assert words[0].item() % (1 << 64) == 0xE220A8397B1DCDAF
    monkeypatch.setattr(native, "library", lambda: None)  # the tensor-operation twin (other devices)
    assert torch.equal(native.random_words(200_000, key), words)
    assert native.random_words(0, key).shape == (0,)


def test_dropout_bits_are_uniform_16_bit_slices_governed_by_the_seed():
    from compendium.graph.layers import dropout_bits

    torch.manual_seed(3)
    bits, thr = dropout_bits((4, 50_000), 0.25)
    torch.manual_seed(3)
    again, _ = dropout_bits((4, 50_000), 0.25)
    assert torch.equal(bits, again) and bits.dtype == torch.int16 and thr == -(2 ** 15) + 2 ** 14
    assert not torch.equal(dropout_bits((4, 50_000), 0.25)[0], bits)  # the generator moved on
    counts = torch.bincount((bits.flatten().long() + 2 ** 15) >> 12, minlength=16).float()  # 16 equal bins
    expected = bits.numel() / 16
    assert float(((counts - expected) ** 2 / expected).sum()) < 40  # χ² with 15 d.o.f.: p ≈ 5e-4 at 40
    for j in range(4):  # each of the four slices of a word is uniform on its own
        assert abs(float((bits.view(-1, 4)[:, j] >= thr).float().mean()) - 0.75) < 0.01


def test_static_stfn_and_mean_readout_equal_the_per_step_computation():
    torch.manual_seed(0)
    n = 5
    x = (torch.rand(n, 7) < 0.4).float()
    adj = normalized_adjacency(EDGES, n)
    layer = SpikingGCNConv(7, 6, T=4, num_nodes=n, stfn=True, lif={"decay": 0.5, "threshold": 0.3, "step_mode": "multi"})
    with torch.no_grad():
        layer.norm.weight.uniform_(0.5, 1.5)
        layer.norm.bias.uniform_(-0.2, 0.2)
    torch.testing.assert_close(layer.presynaptic(x, adj), layer.presynaptic(x.unsqueeze(0).expand(4, -1, -1), adj))
    net = SpikingGNN("gcn", 7, 6, 3, n, 4, stfn=True, lif={"decay": 0.5, "threshold": 0.3}, dropout=0.0).eval()
    spikes = net.layer1(x, adj)
    per_step = net.layer2(spikes, adj).mean(0)  # the second layer at every step, then the mean over steps
    torch.testing.assert_close(net(x, adj), per_step)


def test_fused_rate_equals_the_layer_its_dropout_and_the_mean_and_draws_the_same_masks():
    """SpikingGCNConv.rate (the fused static-input path) gives what the layer's forward, dropout and
    the mean over steps give, value and gradient, from the same random draws; with a hook on the
    neuron it takes the unfused path, so the hook sees the neuron's call."""
    n = 5
    x = (torch.rand(n, 7, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    adj = normalized_adjacency(EDGES, n)
    for stfn in (False, True):
        torch.manual_seed(0)
        layer = SpikingGCNConv(7, 6, T=4, num_nodes=n, stfn=stfn, lif={"decay": 0.5, "threshold": 0.2, "step_mode": "multi"})
        with torch.no_grad():
            layer.linear.weight.mul_(3.0)
        results = []
        for fused in (True, False):
            layer.zero_grad()
            hook = None if fused else layer.neuron.register_forward_hook(lambda *a: None)
            torch.manual_seed(7)
            r = layer.rate(x, adj, 0.3, training=True)
            (r * torch.arange(r.numel()).view(r.shape)).sum().backward()
            results.append((r.detach(), layer.linear.weight.grad.clone(), torch.randint(0, 1000, (1,))))
            if hook is not None:
                hook.remove()
        (a, ga, next_a), (b, gb, next_b) = results
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(ga, gb)
        assert a.count_nonzero() > 0 and torch.equal(next_a, next_b)  # the same draws were consumed
        torch.testing.assert_close(layer.rate(x, adj), layer(x, adj).mean(0))  # evaluation: no dropout
        if stfn:  # a hook on the normalisation also takes the unfused path, so that it sees its call
            seen = []
            hook = layer.norm.register_forward_hook(lambda *a: seen.append(a[2].shape))
            layer.rate(x, adj, 0.3, training=True)
            hook.remove()
            assert seen == [torch.Size([1, n, 6])]  # the static input normalised once


def test_row_normalize_is_pygs_normalize_features():
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]])
    from compendium.graph import row_normalize

    torch.testing.assert_close(row_normalize(x), torch.tensor([[1 / 3, 0, 1 / 3, 1 / 3], [0, 0, 0, 0], [0, 1.0, 0, 0]]))


def test_node_classifier_reuses_eval_logits_until_the_parameters_change():
    torch.manual_seed(0)
    n = 5
    x = torch.rand(n, 3)
    clf = NodeClassifier(GCN(3, 4, 2, 0.0), x, EDGES, n).eval()
    calls = []
    clf.model.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        a, b = clf(torch.tensor([0, 1])), clf(torch.tensor([2, 3, 4]))
    assert len(calls) == 1 and torch.equal(torch.cat([a, b]), clf.full())
    opt = torch.optim.Adam(clf.parameters(), lr=0.1)
    clf.train()
    clf(torch.arange(n)).sum().backward()
    opt.step()
    clf.eval()
    with torch.no_grad():
        c = clf(torch.tensor([0, 1]))
    assert not torch.equal(a, c) and torch.equal(c, clf.full()[:2])


def test_threshold_scaled_init_brings_the_plain_layers_to_threshold():
    from compendium.graph import threshold_scaled_graph_init
    from compendium.spiking.init import firing_rates

    torch.manual_seed(0)
    n = 40
    x = (torch.rand(n, 30) < 0.1).float()
    src = torch.arange(n - 1)
    edges = torch.cat([torch.stack([src, src + 1]), torch.stack([src + 1, src])], 1)
    for kind in ("gcn", "gat"):
        net = SpikingGNN(kind, 30, 8, 3, n, 4, stfn=False, lif={"decay": 0.5, "threshold": 1.0}, dropout=0.0, heads=2)
        clf = NodeClassifier(net, x, edges, n)
        with torch.no_grad():  # a tiny initial scale: nothing fires
            for p in net.layer1.parameters():
                if p.dim() == 2:
                    p.mul_(1e-3)
        assert firing_rates(clf, torch.arange(n)) == [0.0]
        (std,) = threshold_scaled_graph_init(clf)
        assert std == pytest.approx(1.0, rel=0.05 if kind == "gat" else 1e-4)
        assert 0.02 < firing_rates(clf, torch.arange(n))[0] < 0.9
    stfn = NodeClassifier(SpikingGNN("gcn", 30, 8, 3, n, 4, stfn=True, lif={"decay": 0.5, "threshold": 1.0}, dropout=0.0),
                          x, edges, n)
    assert threshold_scaled_graph_init(stfn) == []  # STFN layers are left as their authors initialise them


def _chapter_defaults():
    import yaml
    from conftest import ROOT

    return yaml.safe_load((ROOT / "notebooks" / "stfn.yaml").read_text())["profiles"]["default"]


def test_every_spiking_variant_fires_at_initialisation_on_cora():
    """In the chapter's default settings, on Cora, every spiking variant's hidden layer fires at
    initialisation (so a zero surrogate gradient cannot decide a comparison); without the
    threshold-scaled initialisation the plain GC-SNN would not."""
    from conftest import mirror_has

    if not mirror_has("planetoid/Cora/raw/ind.cora.x"):
        pytest.skip("needs the Cora files")
    from compendium.datasets import load_planetoid
    from compendium.graph.experiment import MODELS, build_classifier
    from compendium.spiking.init import firing_rates

    d = _chapter_defaults()
    data, _ = load_planetoid("cora")
    nodes = torch.arange(data.num_nodes)
    common = dict(T=d["T"], decay=d["decay"], threshold=d["threshold"], encoding=d["encoding"], rho=d["rho"])
    for model in [m for m in MODELS if "snn" in m]:
        ga = model.startswith("ga")
        clf, _, scaled = build_classifier(data, model, 0, hidden=8 if ga else d["hidden_snn"],
                                          dropout=d["dropout_ga"] if ga else d["dropout_gc"], **common)
        (rate,) = firing_rates(clf, nodes)
        assert 0.05 < rate < 0.6, f"{model}: hidden firing rate {rate:.4f} at initialisation"
        assert scaled == (not model.endswith("stfn"))
    torch.manual_seed(0)
    unscaled = NodeClassifier(SpikingGNN("gcn", data.num_features, d["hidden_snn"], 7, data.num_nodes, d["T"], stfn=False,
                                         lif={"decay": d["decay"], "threshold": d["threshold"]}, dropout=d["dropout_gc"]),
                              data.x, data.edge_index, data.num_nodes)
    assert firing_rates(unscaled, nodes)[0] < 0.001  # PyTorch's default initialisation: (almost) silent


def _row_major_copy(clf):
    import copy

    twin = copy.deepcopy(clf)
    for m in twin.modules():
        if isinstance(m, torch.nn.Linear):
            m.weight = torch.nn.Parameter(m.weight.detach().contiguous())
    return twin


@pytest.mark.parametrize("kind", ["gcn", "gc-snn+stfn"])
def test_transposed_weight_storage_trains_as_row_major_bit_for_bit(kind):
    # bag-of-words-like features (2 % non-zero, so held as a SparseOperator): the first layer's
    # weight is stored column-major for the sparse product X Wᵀ; training must not notice. The
    # shapes are Cora's hidden and class widths (64 → 7 for the GC-SNN), at which a dense
    # F.linear rounds differently for a column-major weight: storing every layer's weight
    # column-major (as an earlier version did) fails this
    n, f, hidden, classes = 700, 300, 16 if kind == "gcn" else 64, 7
    x, edges, y = _bag_of_words_graph(n, f, classes, density=0.02)
    torch.manual_seed(0)
    net = (GCN(f, hidden, classes, dropout=0.5) if kind == "gcn" else
           SpikingGNN("gcn", f, hidden, classes, n, 4, stfn=True, lif={"decay": 0.5, "threshold": 0.5}, dropout=0.1))
    clf = NodeClassifier(net, x, edges, n)
    first, second = (clf.model.lin1, clf.model.lin2) if kind == "gcn" else (clf.model.layer1.linear,
                                                                            clf.model.layer2.linear)
    assert isinstance(clf.x, SparseOperator)
    assert first.weight.shape == (hidden, f) and first.weight.t().is_contiguous()
    assert second.weight.is_contiguous()  # its input is dense
    start = first.weight.detach().clone()
    twin = _row_major_copy(clf)
    assert twin.state_dict().keys() == clf.state_dict().keys()
    idx = torch.arange(n)
    for model in (clf, twin):
        fit(model, (idx[:300], y[:300]), test=(idx[300:], y[300:]), epochs=8, lr=0.02, weight_decay=5e-4,
            batch_size=300, eval_batch_size=n, seed=1, show_progress=False)
    for (name, a), b in zip(clf.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), name
    assert not torch.equal(first.weight, start)  # it trained


def test_dense_features_keep_row_major_weights():
    # spike trains [T, N, F] (Bernoulli coding) are dense: no layer is stored transposed
    g = torch.Generator().manual_seed(3)
    n, f = 40, 30
    x = encode_features((torch.rand(n, f, generator=g) < 0.2).float(), 4, "bernoulli", g)
    src = torch.arange(n - 1)
    edges = torch.cat([torch.stack([src, src + 1]), torch.stack([src + 1, src])], 1)
    net = SpikingGNN("gcn", f, 8, 3, n, 4, stfn=True, lif={"decay": 0.5, "threshold": 0.5}, dropout=0.1)
    clf = NodeClassifier(net, x, edges, n)
    assert not isinstance(clf.x, SparseOperator)
    assert all(m.weight.is_contiguous() for m in clf.modules() if isinstance(m, torch.nn.Linear))


def _bag_of_words_graph(n=300, f=120, classes=4, seed=3, density=0.03):
    """Binary features sparse enough to be held as a SparseOperator, edges i ↔ i + 3, cyclic labels."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, f, generator=g) < density).float()
    src = torch.arange(n - 3)
    edges = torch.cat([torch.stack([src, src + 3]), torch.stack([src + 3, src])], 1)
    return x, edges, torch.arange(n) % classes


def _no_memo(self, x, adj):
    return self._current(x, adj)


@pytest.mark.parametrize("stfn", [False, True])
def test_the_current_memo_trains_as_a_fresh_computation_bit_for_bit(stfn, monkeypatch):
    # full batch with a validation set: every epoch after the first starts on the current that
    # the evaluation after the previous step computed; taking it must change nothing
    from compendium.graph.experiment import FullBatch

    n, classes, epochs = 300, 4, 6
    x, edges, y = _bag_of_words_graph(n, classes=classes)
    idx = torch.arange(n)
    train, val, test = FullBatch(idx[:100], y[:100]), FullBatch(idx[100:200], y[100:200]), FullBatch(idx[200:], y[200:])
    states, histories, calls = [], [], []
    real = SpikingGCNConv._current
    monkeypatch.setattr(SpikingGCNConv, "_current", lambda *a: (calls.append(1), real(*a))[1])
    for memo in (True, False):
        with monkeypatch.context() as m:
            if not memo:
                m.setattr(SpikingGCNConv, "current", _no_memo)
            calls.clear()
            torch.manual_seed(0)
            net = SpikingGNN("gcn", x.shape[1], 16, classes, n, 4, stfn=stfn, lif={"decay": 0.5, "threshold": 0.5},
                             dropout=0.1)
            clf = NodeClassifier(net, x, edges, n)
            assert isinstance(clf.x, SparseOperator)
            h = fit(clf, train, val=val, test=test, epochs=epochs, lr=0.02, weight_decay=5e-4, batch_size=None,
                    eval_batch_size=None, seed=1, show_progress=False)
            # one current per evaluation, and the first training step's: every later step took the memo
            assert len(calls) == (epochs + 1 if memo else 2 * epochs)
            states.append(clf.state_dict())
            histories.append([{k: v for k, v in r.items() if k != "time_s"} for r in h.records])
    assert histories[0] == histories[1]
    for (name, a), b in zip(states[0].items(), states[1].values()):
        assert torch.equal(a, b), name
    assert histories[0][0]["train_loss"] != histories[0][-1]["train_loss"]  # it trained


def test_the_current_memo_is_not_taken_after_its_inputs_change():
    import copy

    n, classes = 300, 4
    x, edges, y = _bag_of_words_graph(n, classes=classes)
    torch.manual_seed(0)
    clf = NodeClassifier(SpikingGNN("gcn", x.shape[1], 16, classes, n, 4, stfn=True,
                                    lif={"decay": 0.5, "threshold": 0.5}, dropout=0.0), x, edges, n)
    layer, idx = clf.model.layer1, torch.arange(n)

    def step(model):  # one training step's loss and gradients
        model.zero_grad(set_to_none=True)
        model.train()
        loss = torch.nn.functional.cross_entropy(model(idx), y)
        loss.backward()
        return [loss.detach()] + [p.grad for p in model.parameters()]

    def grads():
        return step(clf)

    def fresh():  # the same step from a copy that never evaluated (copies start without the memo)
        return step(copy.deepcopy(clf))

    def evaluate():
        clf.eval()
        clf._cache = None  # the classifier's own logits cache would answer without running the layer
        with torch.no_grad():
            clf(idx)
        assert layer._memo is not None

    def change_weight():
        with torch.no_grad():
            layer.linear.weight.mul_(1.5)

    def change_stfn():
        with torch.no_grad():
            layer.norm.rho.add_(0.25)

    def change_features():
        with torch.no_grad():
            clf.x.values.mul_(2.0)
            clf.x.values_t.mul_(2.0)

    def change_adjacency():
        with torch.no_grad():
            clf.adj.values.mul_(0.5)
            clf.adj.values_t.mul_(0.5)

    def replace_features():  # the same values in another operator
        clf.x = SparseOperator(clf.x.to_dense() * 3.0)

    def change_threshold():  # STFN's scale ρ V_th: a constant, not a tensor
        layer.norm.threshold = 0.75

    def thaw_weight():  # frozen while evaluated: the recorded graph has no path to it
        layer.linear.weight.requires_grad_(True)

    for change in (change_weight, change_stfn, change_features, change_adjacency, replace_features, change_threshold,
                   thaw_weight):
        if change is thaw_weight:
            layer.linear.weight.requires_grad_(False)
        evaluate()
        change()
        assert copy.deepcopy(clf).model.layer1._memo is None  # copies (and pickles) leave the graph behind
        expected = fresh()
        got = grads()
        assert layer._memo is None  # taken or dropped by the step, never kept for another
        assert len(got) == len(expected) and all((a is None and b is None) or torch.equal(a, b)
                                                  for a, b in zip(got, expected)), change.__name__
    # unchanged inputs: the memo is taken, once, and gives the fresh step's values
    evaluate()
    memo = layer._memo[1]
    expected = fresh()
    assert layer.current(clf.x, clf.adj) is memo and layer._memo is None
    evaluate()
    got = grads()
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


def test_importing_the_graph_package_in_a_jupyter_kernel_prints_no_tqdm_notice():
    # PyG imports tqdm.auto, which in a Jupyter kernel without ipywidgets warns (TqdmWarning) on
    # the graph chapter's first cell; a kernel is simulated as tqdm.autonotebook detects one
    import subprocess
    import sys

    code = """
import sys, types, warnings
sys.modules["ipykernel.zmqshell"] = types.ModuleType("ipykernel.zmqshell")
import IPython
class ZMQInteractiveShell: pass
IPython.get_ipython = lambda: ZMQInteractiveShell()
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    import compendium.graph
    import tqdm.auto
print(sorted({type(w.message).__name__ for w in seen}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "TqdmWarning" not in out, out


def test_the_current_memo_is_not_kept_where_it_cannot_be_trusted():
    import io

    n, classes = 300, 4
    x, edges, _ = _bag_of_words_graph(n, classes=classes)
    torch.manual_seed(0)
    net = SpikingGNN("gcn", x.shape[1], 16, classes, n, 4, stfn=True, lif={"decay": 0.5, "threshold": 0.5}, dropout=0.0)
    layer = net.layer1
    adj = normalized_adjacency(edges, n)  # a sparse COO tensor: no storage to key on
    with torch.no_grad():
        out = net(x, adj)
    assert layer._memo is None and out.shape == (n, classes)
    ops = SparseOperator(x), SparseOperator(adj)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # (MKL has no bfloat16 sparse product)
        assert layer._read(*ops) is None
    assert layer._read(*ops) is not None
    with torch.inference_mode():
        net(*ops)
    assert layer._memo is None
    hook = layer.linear.register_forward_pre_hook(lambda *_: None)
    with torch.no_grad():
        net(*ops)
    assert layer._memo is None
    hook.remove()
    with torch.no_grad():
        net(*ops)
    assert layer._memo is not None  # and a saved layer leaves it behind
    buf = io.BytesIO()
    torch.save(layer, buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=False)._memo is None and layer._memo is not None
