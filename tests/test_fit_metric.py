"""fit's metric hook: the default is accuracy as before; a regression loop records its own
metric (or none) and keeps the NaN guard, the schedule and the checkpoints."""

import pytest
import torch
from torch import nn

from compendium.learning.train import TrainingDiverged, accuracy, evaluate, fit


def _classification(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return x, (x[:, 0] > 0).long()


def _regression(n=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return x, x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1


def test_default_metric_is_accuracy_as_before():
    train = _classification()
    model = nn.Linear(4, 2)
    hist = fit(model, train, epochs=2, test=train, show_progress=False, batch_size=16)
    rec = hist.records[-1]
    assert {"train_loss", "train_acc", "test_loss", "test_acc"} <= set(rec)
    with torch.no_grad():
        expected = float((model(train[0]).argmax(1) == train[1]).float().mean())
    assert rec["test_acc"] == pytest.approx(expected)
    assert evaluate(model, train)["acc"] == pytest.approx(expected)
    assert float(accuracy(torch.tensor([[0.0, 1.0], [2.0, 1.0]]), torch.tensor([1, 1]))) == 0.5


def test_regression_loop_records_its_own_metric():
    train, test = _regression(), _regression(seed=1)
    mae = lambda out, y: (out - y).abs().mean()  # noqa: E731
    hist = fit(nn.Linear(3, 1), train, epochs=15, lr=0.05, test=test, loss_fn=nn.functional.mse_loss,
               metric=mae, metric_name="mae", show_progress=False, batch_size=32)
    rec = hist.records[-1]
    assert {"train_mae", "test_mae", "test_loss"} <= set(rec) and "train_acc" not in rec and "test_acc" not in rec
    assert hist["test_mae"][-1] < hist["test_mae"][0] / 2  # it learned, and the metric says so
    assert hist.first_epoch("test_mae", at_least=0.0) == 1


def test_metric_none_records_losses_only_and_the_nan_guard_still_holds(tmp_path):
    train = _regression()
    hist = fit(nn.Linear(3, 1), train, epochs=1, loss_fn=nn.functional.mse_loss, metric=None, show_progress=False,
               val=train, checkpoint=tmp_path / "ck.pt")
    assert set(hist.records[0]) == {"epoch", "train_loss", "lr", "time_s", "val_loss"}
    assert (tmp_path / "ck.pt").is_file()
    with pytest.raises(TrainingDiverged, match="loss became nan at epoch 1, step 0"):
        fit(nn.Linear(3, 1), train, epochs=1, loss_fn=lambda out, y: (out - y).sum() * float("nan"), metric=None,
            show_progress=False)
