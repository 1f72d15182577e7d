"""Data-parallel `fit`: two gloo processes on the CPU end with the parameters of one process
trained on the same global batches (compendium.learning.distributed)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
from torch import nn

from compendium.learning import fit
from compendium.learning.distributed import ShardedBatchSampler
from compendium.spiking.neuron import LIF


class TinySNN(nn.Module):
    """A two-layer spiking MLP over T steps (direct coding), read out by mean membrane input."""

    def __init__(self, T: int = 4):
        super().__init__()
        self.T = T
        self.fc1, self.fc2 = nn.Linear(12, 16), nn.Linear(16, 3)
        self.lif = LIF(decay=0.5, threshold=0.3)

    def forward(self, x):
        cur = self.fc1(x).unsqueeze(0).expand(self.T, -1, -1)
        spikes = self.lif(cur)
        return self.fc2(spikes).mean(0)


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(48, 12, generator=g)
    return x, (x[:, :3].sum(1) > 0).long() + (x[:, 3] > 1).long()


def _train(checkpoint=None, epochs: int = 3) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = TinySNN()
    hist = fit(model, _data(), epochs=epochs, lr=0.01, batch_size=8, seed=3, show_progress=False,
               checkpoint=checkpoint)
    return {k: v.detach().clone() for k, v in model.state_dict().items()} | {"_loss": torch.tensor(hist["train_loss"])}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    ckpt = os.path.join(os.path.dirname(out), "ckpt.pt")
    state = _train(checkpoint=ckpt)
    torch.save(state, f"{out}.{rank}")
    import torch.distributed as dist

    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sharded_sampler_matches_a_shuffled_dataloader_and_splits_each_global_batch():
    n, b, seed = 21, 4, 7
    one = list(ShardedBatchSampler(n, b, seed=seed))
    ref = [batch.tolist() for (batch,) in torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.arange(n)), batch_size=b, shuffle=True,
        generator=torch.Generator().manual_seed(seed))]
    assert one == ref
    r0 = list(ShardedBatchSampler(n, b, seed=seed, rank=0, world=2))
    r1 = list(ShardedBatchSampler(n, b, seed=seed, rank=1, world=2))
    assert len(r0) == len(r1) == len(ShardedBatchSampler(n, b, seed=seed, rank=0, world=2)) == 5
    for k in range(5):
        assert sorted(r0[k] + r1[k]) == sorted(ref[k][: 2 * (len(ref[k]) // 2)])
        assert len(r0[k]) == len(r1[k])


def test_two_gloo_processes_end_with_the_parameters_of_one_process(tmp_path):
    import torch.multiprocessing as mp

    single = _train()
    out = str(tmp_path / "state")
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    ranks = [torch.load(f"{out}.{r}", weights_only=False) for r in range(2)]
    for key, ref in single.items():
        for r, state in enumerate(ranks):
            assert torch.allclose(state[key], ref, atol=1e-5, rtol=1e-4), (key, r)
    # the parameters moved: the comparison is not between two untouched initialisations
    torch.manual_seed(0)
    init = TinySNN().state_dict()
    assert not torch.allclose(init["fc1.weight"], single["fc1.weight"])
    assert (tmp_path / "ckpt.pt").is_file()  # rank 0 wrote the checkpoint


def test_global_batch_must_split_over_the_processes(monkeypatch):
    with pytest.raises(ValueError, match="multiple of the number of processes"):
        ShardedBatchSampler(10, 5, seed=0, rank=0, world=2)
