"""The dataset registry: verified resolution from cache, mirror and download; clear errors."""

import hashlib

import numpy as np
import pytest
import torch

from compendium.datasets import MNIST_RESPLIT, DataMissing, Registry, load_mnist, load_planetoid
from conftest import mirror_has

PAYLOAD = b"some dataset bytes\n" * 100
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def _registry(tmp_path, payload_sha=SHA, urls=(), offline=False, with_mirror=True):
    entries = {"toy": {"title": "Toy", "files": [{"path": "toy/raw/a.bin", "urls": list(urls), "sha256": payload_sha}]}}
    logs = []
    reg = Registry(Registry.parse(entries), cache_dir=tmp_path / "cache",
                   mirror_dir=(tmp_path / "mirror") if with_mirror else None, offline=offline, log=logs.append)
    return reg, logs


def _put(folder, data=PAYLOAD):
    p = folder / "toy" / "raw" / "a.bin"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def test_resolves_from_the_mirror(tmp_path):
    reg, _ = _registry(tmp_path)
    _put(tmp_path / "mirror")
    r = reg.resolve("toy")["a.bin"]
    assert r.source == "mirror" and r.sha256 == SHA


def test_cache_comes_before_the_mirror(tmp_path):
    reg, _ = _registry(tmp_path)
    _put(tmp_path / "mirror")
    _put(tmp_path / "cache")
    assert reg.resolve("toy")["a.bin"].source == "cache"


def test_checksum_mismatch_is_never_used(tmp_path):
    reg, logs = _registry(tmp_path, offline=True)
    _put(tmp_path / "mirror", b"tampered")
    with pytest.raises(DataMissing) as err:
        reg.resolve("toy")
    assert "toy/raw/a.bin" in str(err.value) and "downloads are off" in str(err.value)
    assert any("checksum does not match" in m for m in logs)


def test_missing_file_error_says_where_to_put_it(tmp_path):
    reg, _ = _registry(tmp_path, urls=["https://example.invalid/a.bin"], offline=True, with_mirror=False)
    with pytest.raises(DataMissing) as err:
        reg.resolve("toy")
    msg = str(err.value)
    assert "toy/raw/a.bin" in msg and str(tmp_path / "cache") in msg and "https://example.invalid/a.bin" in msg
    assert "COMPENDIUM_DATA_MIRROR" in msg


def test_verified_download_lands_atomically_in_the_cache(tmp_path):
    src = tmp_path / "server" / "a.bin"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    reg, _ = _registry(tmp_path, urls=[src.as_uri()], with_mirror=False)
    r = reg.resolve("toy")["a.bin"]
    assert r.source == "download" and (tmp_path / "cache" / "toy" / "raw" / "a.bin").read_bytes() == PAYLOAD
    assert not list((tmp_path / "cache" / "toy" / "raw").glob("*.part"))


def test_download_with_wrong_checksum_is_discarded(tmp_path):
    src = tmp_path / "server" / "a.bin"
    src.parent.mkdir()
    src.write_bytes(b"not the file")
    bad_then_good = tmp_path / "server2" / "a.bin"
    bad_then_good.parent.mkdir()
    bad_then_good.write_bytes(PAYLOAD)
    reg, logs = _registry(tmp_path, urls=[src.as_uri()], with_mirror=False)
    with pytest.raises(DataMissing):
        reg.resolve("toy")
    assert list((tmp_path / "cache" / "toy" / "raw").iterdir()) == []  # nothing left behind
    assert any("checksum mismatch" in m for m in logs)
    reg2, _ = _registry(tmp_path, urls=[src.as_uri(), bad_then_good.as_uri()], with_mirror=False)
    assert reg2.resolve("toy")["a.bin"].source == "download"  # falls through to the next URL


def test_file_without_recorded_checksum_is_refused(tmp_path):
    entries = {"toy": {"title": "Toy", "files": [{"path": "toy/raw/a.bin", "urls": [], "sha256": None}]}}
    logs = []
    reg = Registry(Registry.parse(entries), cache_dir=tmp_path / "cache", mirror_dir=tmp_path / "mirror",
                   offline=True, log=logs.append)
    _put(tmp_path / "mirror")
    with pytest.raises(DataMissing, match="no checksum is recorded"):
        reg.resolve("toy")


def test_unknown_dataset_lists_known_ones(tmp_path):
    reg, _ = _registry(tmp_path)
    with pytest.raises(KeyError, match="registered: toy"):
        reg.resolve("nope")


def test_shipped_registry_is_complete():
    reg = Registry.default(log=lambda m: None)
    for name in ("mnist", "fashion-mnist", "cifar10", "cora", "citeseer", "pubmed", "omniglot-small"):
        ds = reg.dataset(name)
        assert ds.licence and ds.homepage and ds.checksum_source
        for f in ds.files:
            assert f.urls, f.path
            assert all(len(v) in (32, 64) for v in f.checksums.values())
    unverifiable = [f.path for ds in reg.datasets.values() for f in ds.files if not f.verifiable]
    assert unverifiable == ["planetoid/PubMed/raw/ind.pubmed.allx"]


@pytest.mark.skipif(not mirror_has("mnist/raw/t10k-images-idx3-ubyte.gz"), reason="needs the MNIST test files")
def test_mnist_resplit_is_declared_and_deterministic():
    (xtr, ytr), (xte, yte), info = load_mnist(split="resplit")
    assert len(xtr) == MNIST_RESPLIT["n_train"] and len(xte) == MNIST_RESPLIT["n_test"]
    assert info.substitute and "re-split" in info.description
    assert xtr.shape[1:] == (1, 28, 28) and 0 <= float(xtr.min()) and float(xtr.max()) <= 1
    assert sorted(set(ytr.tolist())) == list(range(10))
    (xtr2, _), _, _ = load_mnist(split="resplit")
    assert np.array_equal(xtr.numpy(), xtr2.numpy())
    (small, _), _, info = load_mnist(100, 50, split="resplit", seed=3)
    assert len(small) == 100 and "subsampled" in info.description


@pytest.mark.skipif(not mirror_has("planetoid/Cora/raw/ind.cora.x"), reason="needs the Cora files")
def test_cora_loads_from_verified_files():
    data, info = load_planetoid("cora")
    assert data.num_nodes == 2708 and int(data.train_mask.sum()) == 140 and int(data.test_mask.sum()) == 1000
    assert "public split" in info.description


def test_mnist_full_split_fails_clearly_when_training_images_are_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPENDIUM_OFFLINE", "1")
    monkeypatch.setenv("COMPENDIUM_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("COMPENDIUM_DATA_MIRROR", str(tmp_path / "empty-mirror"))
    with pytest.raises(DataMissing, match="t10k-images"):
        load_mnist(split="full")


@pytest.mark.skipif(not mirror_has("omniglot/raw/images_background_small1.zip", "omniglot/raw/images_background_small2.zip"),
                    reason="needs the two small Omniglot zips")
def test_omniglot_small_merges_both_subsets_by_character():
    from compendium.datasets import load_omniglot_small

    x, y, names, info = load_omniglot_small(size=20)
    assert x.shape == (len(y), 1, 20, 20) and len(names) == int(y.max()) + 1
    counts = torch.bincount(y)
    assert int(counts.min()) == int(counts.max()) == 20  # 20 drawers per character, none duplicated
    assert len(set(names)) == len(names) and all("/" in n for n in names)
    assert 0.02 < float(x.mean()) < 0.3  # ink is 1 on a 0 background, and strokes are thin
    assert info.substitute and "small" in info.description
    with pytest.raises(ValueError):
        load_omniglot_small(size=4)


def _write_idx(path, array):
    """An IDX file (gzip) as MNIST ships them: magic 0x0000 08 ndim, big-endian dims, uint8 data."""
    import gzip

    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reader_on_synthetic_idx_files(tmp_path):
    """The loader reads the registry's layout with the shared IDX reader, scales to [0, 1],
    subsamples with a seed, and says what ran."""
    from compendium.datasets import load_fashion_mnist

    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (30, 28, 28)), "train-labels-idx1-ubyte.gz": np.arange(30) % 10,
              "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (20, 28, 28)), "t10k-labels-idx1-ubyte.gz": np.arange(20) % 10}
    entries = {"fashion-mnist": {"title": "F", "files": []}}
    for name, a in arrays.items():
        p = tmp_path / "mirror" / "fashion-mnist" / "raw" / name
        _write_idx(p, a)
        entries["fashion-mnist"]["files"].append({"path": f"fashion-mnist/raw/{name}",
                                                  "sha256": hashlib.sha256(p.read_bytes()).hexdigest()})
    reg = Registry(Registry.parse(entries), cache_dir=tmp_path / "cache", mirror_dir=tmp_path / "mirror", offline=True)
    (xtr, ytr), (xte, yte), info = load_fashion_mnist(registry=reg)
    assert xtr.shape == (30, 1, 28, 28) and xte.shape == (20, 1, 28, 28) and xtr.dtype == torch.float32
    assert np.allclose(xtr[:, 0].numpy() * 255, arrays["train-images-idx3-ubyte.gz"])
    assert ytr.tolist() == (np.arange(30) % 10).tolist() and not info.substitute and info.name == "fashion-mnist"
    (small, _), _, info = load_fashion_mnist(10, 5, registry=reg, seed=1)
    assert len(small) == 10 and "subsampled" in info.description


@pytest.mark.skipif(not mirror_has("fashion-mnist/raw/train-images-idx3-ubyte.gz", "fashion-mnist/raw/t10k-labels-idx1-ubyte.gz"),
                    reason="needs the Fashion-MNIST files")
def test_fashion_mnist_official_sizes_and_balanced_classes():
    from compendium.datasets import FASHION_CLASSES, load_fashion_mnist, load_images

    (xtr, ytr), (xte, yte), info = load_fashion_mnist()
    assert xtr.shape == (60000, 1, 28, 28) and xte.shape == (10000, 1, 28, 28)
    assert torch.bincount(ytr).tolist() == [6000] * 10 and torch.bincount(yte).tolist() == [1000] * 10
    assert len(FASHION_CLASSES) == 10 and "official split" in info.description
    # `auto` falls back to Fashion-MNIST when CIFAR-10 is absent, and says it is a stand-in
    _, (x, _), info = load_images("auto", 100, 100, fallback="fashion-mnist")
    if info.name == "fashion-mnist":
        assert info.substitute and "CIFAR-10 did not resolve" in info.description
