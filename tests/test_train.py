"""The training loop: it learns, it stops on NaN, it resumes exactly, it refuses bad settings."""

import pytest
import torch
from torch import nn

from compendium.learning import TrainingDiverged, evaluate, fit, resolve_device
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


def test_same_seed_same_numbers():
    data = blobs(128)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        m = spiking_mlp((8, 12, 2), T=4)
        runs.append(fit(m, data, epochs=2, seed=5, show_progress=False)["train_loss"])
    assert runs[0] == runs[1]


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
