"""The training loop: it learns, it stops on NaN, it resumes exactly, it refuses bad settings."""

import pytest
import torch
from torch import nn

from compendium.learning import TrainingDiverged, choose_rate, evaluate, fit, resolve_device
from compendium.spiking.nets import spiking_mlp


def blobs(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.rand(n, 8, generator=g) * 0.3
    x[:, :4] += 0.6 * y[:, None]
    x[:, 4:] += 0.6 * (1 - y[:, None])
    return x.clamp(0, 1), y


def test_spiking_mlp_learns_a_separable_problem():
    data = blobs()
    model = spiking_mlp((8, 16, 2), T=6, encoding="rate")
    before = evaluate(model, data)["acc"]
    hist = fit(model, data, test=data, epochs=6, lr=0.01, batch_size=32, show_progress=False)
    assert hist.last("test_acc") > 0.9 and hist.last("test_acc") > before
    assert hist["train_loss"][-1] < hist["train_loss"][0]
    assert list(hist.frame().columns)[:3] == ["epoch", "train_loss", "train_acc"]


def test_nan_loss_stops_with_a_clear_message():
    x, y = blobs(64)
    x[5, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match="epoch 1"):
        fit(nn.Linear(8, 2), (x, y), epochs=2, batch_size=64, show_progress=False)


def test_resume_continues_exactly(tmp_path):
    data = blobs(128)
    torch.manual_seed(0)
    full = spiking_mlp((8, 12, 2), T=4)
    init = {k: v.clone() for k, v in full.state_dict().items()}
    h_full = fit(full, data, epochs=3, lr=0.01, batch_size=32, seed=1, show_progress=False)

    part = spiking_mlp((8, 12, 2), T=4)
    part.load_state_dict(init)
    ckpt = tmp_path / "ckpt.pt"
    fit(part, data, epochs=2, lr=0.01, batch_size=32, seed=1, checkpoint=ckpt, show_progress=False)
    resumed = spiking_mlp((8, 12, 2), T=4)
    h_res = fit(resumed, data, epochs=3, lr=0.01, batch_size=32, seed=1, checkpoint=ckpt, resume=True,
                show_progress=False)
    assert [r["epoch"] for r in h_res.records] == [1, 2, 3]
    assert h_res["train_loss"] == pytest.approx(h_full["train_loss"], rel=1e-6)
    for k, v in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v)


def test_test_every_evaluates_the_test_set_every_kth_and_last_epoch_and_trains_the_same_model():
    """A direct-coded net draws no random numbers in evaluation, so skipping test passes leaves
    the trained model bit for bit as it was; the test set is read at epochs 2, 4 and the last."""
    data = blobs(128)
    nets, hists = [], []
    for every in (1, 2):
        torch.manual_seed(0)
        net = spiking_mlp((8, 12, 2), T=4, encoding="direct")
        hists.append(fit(net, data, test=data, epochs=5, lr=0.01, batch_size=32, seed=1, show_progress=False,
                         test_every=every))
        nets.append(net)
    tested = [r["epoch"] for r in hists[1].records if "test_acc" in r]
    assert tested == [2, 4, 5]
    assert [a == a for a in hists[1]["test_acc"]] == [False, True, False, True, True]  # NaN where not tested
    assert hists[1].last("test_acc") == hists[0].last("test_acc")
    assert hists[1]["train_loss"] == hists[0]["train_loss"]
    for (k, a), b in zip(nets[0].state_dict().items(), nets[1].state_dict().values()):
        assert torch.equal(a, b), k
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="test_every"):
            fit(nn.Linear(8, 2), data, epochs=1, test_every=bad, show_progress=False)


def test_tensor_batches_give_the_per_sample_loader_s_batches_and_training_bit_for_bit():
    """A tuple of tensors is batched by indexing (TensorBatches.__getitems__), not by a loop over
    samples and a stack: the same batches (values, dtypes, strides) and so the same training as
    a plain TensorDataset, which takes DataLoader's per-sample path."""
    from torch.utils.data import DataLoader, TensorDataset

    from compendium.learning.train import TensorBatches, _collate

    x, y = blobs(100)
    images = torch.rand(100, 1, 6, 6, generator=torch.Generator().manual_seed(3))
    for ds_a, ds_b in ((TensorBatches(x, y), TensorDataset(x, y)), (TensorBatches(images, y), TensorDataset(images, y))):
        a = list(DataLoader(ds_a, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(5),
                            collate_fn=_collate(ds_a)))
        b = list(DataLoader(ds_b, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(5)))
        assert len(a) == len(b) == 4
        for ba, bb in zip(a, b):
            for ta, tb in zip(ba, bb):
                assert ta.dtype == tb.dtype and ta.stride() == tb.stride() and torch.equal(ta, tb)
    hists, nets = [], []
    for data in ((x, y), TensorDataset(x, y)):
        torch.manual_seed(0)
        net = spiking_mlp((8, 12, 2), T=4, encoding="rate")
        hists.append(fit(net, data, test=data, epochs=2, lr=0.01, batch_size=16, seed=2, show_progress=False))
        nets.append(net)
    assert hists[0]["train_loss"] == hists[1]["train_loss"] and hists[0]["test_acc"] == hists[1]["test_acc"]
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        assert torch.equal(a, b)


def test_same_seed_same_numbers():
    data = blobs(128)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        m = spiking_mlp((8, 12, 2), T=4)
        runs.append(fit(m, data, epochs=2, seed=5, show_progress=False)["train_loss"])
    assert runs[0] == runs[1]



@pytest.mark.parametrize("batch_size", [16, None])
def test_fit_leaves_the_global_random_stream_alone(batch_size):
    """Shuffling has its own seeded generator: fit seeds the global RNG (``seed``) and then,
    for a model without randomness of its own, leaves it where the seed put it, so the draws
    inside and after a fit (input spikes, dropout) do not depend on how the loader is built."""
    data = blobs(64)
    if batch_size is None:  # pre-made batches
        data = [tuple(t[i:i + 16] for t in data) for i in range(0, 64, 16)]
    torch.manual_seed(3)
    seeded = torch.get_rng_state()
    torch.manual_seed(0)
    fit(nn.Linear(8, 2), data, epochs=2, batch_size=batch_size, seed=3, show_progress=False)
    assert torch.equal(torch.get_rng_state(), seeded)

@pytest.mark.parametrize("kwargs, err, match", [
    ({"epochs": 0}, ValueError, "epochs"),
    ({"optimizer": "rmsprop"}, ValueError, "optimizer"),
    ({"schedule": "step"}, ValueError, "schedule"),
])
def test_bad_settings_are_refused(kwargs, err, match):
    args = {"epochs": 1, **kwargs}
    with pytest.raises(err, match=match):
        fit(nn.Linear(8, 2), blobs(32), show_progress=False, **args)


def test_device_choice():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ValueError):
        resolve_device("tpu")


def test_choose_rate_takes_the_best_score_and_the_smaller_rate_on_a_tie():
    assert choose_rate([(1e-2, 0.9), (1e-3, 0.8)]) == 1e-2
    assert choose_rate([(1e-2, 0.9), (3e-3, 0.9), (1e-3, 0.8)]) == 3e-3  # order of the trials does not matter
    assert choose_rate([(3e-3, 0.9), (1e-2, 0.9)]) == 3e-3
    with pytest.raises(ValueError, match="at least one trial"):
        choose_rate([])


def test_compare_tuned_gives_every_variant_the_same_trials_and_selects_on_validation():
    """Each variant gets the same learning-rate trials, chosen on a validation split; the final
    runs are per seed, deterministic, and a variant that cannot learn at one rate still gets
    its best rate."""
    import torch
    from torch import nn

    from compendium.learning import compare_tuned, validation_split

    g = torch.Generator().manual_seed(0)
    x = torch.randn(240, 6, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    train, test = (x[:200], y[:200]), (x[200:], y[200:])
    builders = {"linear": lambda: nn.Linear(6, 2), "mlp": lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))}
    probes = lambda m, ep: {"weight_norm": float(sum(p.norm() for p in m.parameters()))}
    kw = dict(lrs=[1e-6, 0.05], tune_epochs=2, epochs=3, seeds=[0, 1], batch_size=32, probe=probes, show_progress=False)
    a = compare_tuned(builders, train, test, **kw)
    b = compare_tuned(builders, train, test, **kw)
    assert len(a.trials) == 4 and {t["variant"] for t in a.trials} == {"linear", "mlp"}
    assert a.chosen == {"linear": 0.05, "mlp": 0.05}  # 1e-6 cannot learn in 2 epochs
    assert [r.test_correct for r in a.runs] == [r.test_correct for r in b.runs]
    # with per-epoch test curves the final count is read from the last epoch, not a second pass: same numbers
    c = compare_tuned(builders, train, test, test_each_epoch=True, **kw)
    assert [r.test_correct for r in c.runs] == [r.test_correct for r in a.runs]
    assert all(len(r.history["test_acc"]) == 3 for r in c.runs)
    assert len(a.test_acc_samples("linear")) == 2 and all(0.8 < v <= 1 for v in a.test_acc_samples("linear"))
    assert [p["epoch"] for p in a.runs[0].probes] == [0, 1, 2, 3]
    assert "2 learning-rate trials" in a.budget_text() and a.summary().loc["mlp", "seeds"] == 2
    (tr, va) = validation_split(train, 0.25, seed=3)
    assert len(tr[0]) == 150 and len(va[0]) == 50
    assert not set(map(tuple, tr[0].tolist())) & set(map(tuple, va[0].tolist()))
