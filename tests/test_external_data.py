"""Event datasets through tonic (offline: a clear error) and the user-supplied ImageNet layout check."""

from __future__ import annotations

from pathlib import Path

import pytest

from compendium.datasets import DataMissing, Registry
from compendium.datasets.external import EVENT_DATASETS, check_image_folder, event_shape, load_events, load_imagenet


@pytest.fixture
def offline_registry(tmp_path) -> Registry:
    return Registry.default(tmp_path, mirror_dir=None, offline=True, log=lambda _m: None)


@pytest.mark.parametrize("name", sorted(EVENT_DATASETS))
def test_event_datasets_are_registered_with_tonic_checksums(name, offline_registry):
    ds = offline_registry.dataset(name)
    cls_name, archives, _sensor, _n = EVENT_DATASETS[name]
    paths = {f.path for f in ds.files}
    assert paths == {f"tonic/{cls_name}/{a}" for a in archives.values()}
    for f in ds.files:
        assert f.verifiable and len(f.checksums["md5"]) == 32 and f.urls


def test_event_dataset_offline_names_the_archive_its_checksum_and_where_to_put_it(offline_registry):
    with pytest.raises(DataMissing) as err:
        load_events("nmnist", "train", frames=8, registry=offline_registry)
    msg = str(err.value)
    assert "tonic/NMNIST/train.zip" in msg and "MISSING" in msg
    assert "md5 20959b8e626244a1b502305a9e6e2031" in msg
    assert str(offline_registry.cache_dir / "tonic" / "NMNIST" / "train.zip") in msg
    assert "downloads are off" in msg
    with pytest.raises(ValueError, match="splits"):
        load_events("dvs-cifar10", "train", registry=offline_registry)
    assert event_shape("dvs-gesture", 16) == (16, 2, 128, 128)


def test_a_corrupt_event_archive_is_refused(offline_registry):
    bad = offline_registry.cache_dir / "tonic" / "DVSGesture" / "ibmGestureTest.tar.gz"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not the archive")
    with pytest.raises(DataMissing, match="CHECKSUM MISMATCH"):
        load_events("dvs-gesture", "test", registry=offline_registry)


def _tree(root: Path, classes: list[str], per_class: int = 2, splits=("train", "val")) -> Path:
    for s in splits:
        for c in classes:
            d = root / s / c
            d.mkdir(parents=True)
            for i in range(per_class):
                (d / f"img{i}.JPEG").write_bytes(b"\xff\xd8fake")
    return root


def test_image_folder_check_accepts_a_complete_tree(tmp_path):
    rep = check_image_folder(_tree(tmp_path / "imnet", ["n01", "n02", "n03"]), n_classes=3)
    assert rep.ok, rep.problems
    assert rep.images == {"train": 6, "val": 6}
    assert rep.classes["val"] == ["n01", "n02", "n03"]


def test_image_folder_check_names_what_is_missing(tmp_path):
    root = _tree(tmp_path / "imnet", ["n01", "n02"], splits=("train",))
    rep = check_image_folder(root, n_classes=3)
    text = "\n".join(rep.problems)
    assert not rep.ok
    assert f"{root / 'val'}/ is missing" in text
    assert "has 2 class folder(s), expected 3" in text

    (root / "val").mkdir()
    (root / "val" / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"x")
    (root / "val" / "n01").mkdir()
    (root / "val" / "n09").mkdir()
    (root / "val" / "n09" / "a.JPEG").write_bytes(b"x")
    text = "\n".join(check_image_folder(root, n_classes=2).problems)
    assert "holds 1 image(s) directly" in text
    assert "fewer than 1 image(s): n01" in text
    assert "name different classes" in text and "n09" in text


def test_load_imagenet_without_a_tree_says_where_to_put_it(tmp_path, monkeypatch, offline_registry):
    monkeypatch.delenv("COMPENDIUM_IMAGENET", raising=False)
    with pytest.raises(DataMissing, match="ImageFolder layout") as err:
        load_imagenet(registry=offline_registry)
    assert str(offline_registry.cache_dir / "imagenet") in str(err.value)
    with pytest.raises(DataMissing, match="expected 1000"):
        load_imagenet(_tree(tmp_path / "small", ["n01"]), registry=offline_registry)
