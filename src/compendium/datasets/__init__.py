"""Datasets: the registry of files (:mod:`.registry`) and loaders that say which data ran.

Every loader returns a :class:`DataInfo` next to the data, stating exactly what was used
(for example "MNIST re-split of the 10k test images, 8,000 train / 2,000 test"), which
chapters record in their results and show to the reader.
"""

from __future__ import annotations

import gzip
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compendium import smoke
from compendium.datasets.registry import DataMissing, Registry, Resolved, copy_to

__all__ = ["DataInfo", "DataMissing", "Registry", "load_mnist", "load_fashion_mnist", "load_cifar10", "load_images",
           "load_planetoid", "MNIST_RESPLIT"]

# The declared offline substitute for the missing MNIST training images: the 10k test
# images split once, with this fixed seed, into 8,000 training and 2,000 test images.
MNIST_RESPLIT = {"seed": 0, "n_train": 8000, "n_test": 2000}


@dataclass
class DataInfo:
    name: str
    description: str
    files: list[dict[str, Any]] = field(default_factory=list)
    n_train: int | None = None
    n_test: int | None = None
    substitute: bool = False  # True when a stand-in ran instead of the paper's data

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "files": self.files,
                "n_train": self.n_train, "n_test": self.n_test, "substitute": self.substitute}

    def __str__(self) -> str:
        return self.description


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip), the format of MNIST and Fashion-MNIST."""
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _subsample(n_total: int, n: int | None, rng: np.random.Generator) -> np.ndarray:
    if n is None or n >= n_total:
        return np.arange(n_total)
    return np.sort(rng.choice(n_total, size=n, replace=False))


def _idx_tensors(x: np.ndarray, y: np.ndarray, idx: np.ndarray):
    """uint8 IDX images ``[N, 28, 28]`` and labels to ``float32 [n, 1, 28, 28]`` in [0, 1] and ``int64 [n]``."""
    import torch

    return (torch.from_numpy(x[idx].astype(np.float32) / 255.0).unsqueeze(1), torch.from_numpy(y[idx].astype(np.int64)))


def _smoke_sizes(name: str, n_train: int | None, n_test: int | None, total_train: int,
                 total_test: int) -> tuple[int | None, int | None]:
    """The subsample sizes a loader uses: as asked outside smoke mode; a few samples in it
    (:func:`compendium.smoke.shrink`, which remembers how much larger the requested set is)."""
    if not smoke.active():
        return n_train, n_test
    return smoke.shrink(name, min(n_train or total_train, total_train), min(n_test or total_test, total_test))


def _smoke_substitute(name: str, n_train: int | None, n_test: int | None, shape: tuple[int, ...], full: tuple[int, int],
                      seed: int, err: Exception):
    """Smoke mode only: synthetic ``(train, test, info)`` of the real shape for absent data."""
    train, test = smoke.synthetic_images(name, n_train or full[0], n_test or full[1], shape, 10,
                                         n_full_train=n_train or full[0], n_full_test=n_test or full[1], seed=seed,
                                         why=str(err).splitlines()[0])
    info = DataInfo(name, f"SYNTHETIC stand-in of {name} (smoke mode: the data is absent here; "
                          f"{len(train[1])} / {len(test[1])} random images of shape {shape})",
                    [], len(train[1]), len(test[1]), True)
    return train, test, info


def _subsample_note(desc: str, itr: np.ndarray, ite: np.ndarray, n_tr: int, n_te: int, seed: int) -> str:
    if len(itr) < n_tr or len(ite) < n_te:
        desc += f"; subsampled to {len(itr):,} train / {len(ite):,} test (seed {seed})"
    return desc


def load_mnist(n_train: int | None = None, n_test: int | None = None, *, split: str = "auto",
               seed: int = 0, registry: Registry | None = None):
    """MNIST as ``(train, test, info)``; ``train``/``test`` are ``(images, labels)`` tensors,
    images ``float32 [N, 1, 28, 28]`` in [0, 1], labels ``int64 [N]``.

    ``split``: ``"full"`` needs the 60k training images; ``"resplit"`` always uses the
    declared re-split of the 10k test images (:data:`MNIST_RESPLIT`); ``"auto"`` takes the
    full split when its files resolve and the re-split otherwise. ``n_train``/``n_test``
    subsample (with ``seed``) for quick runs; the info says so.
    """
    if split not in ("auto", "full", "resplit"):
        raise ValueError(f"split must be 'auto', 'full' or 'resplit', got {split!r}")
    reg = registry or Registry.default()
    try:
        test_files = reg.resolve("mnist", ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"])
    except DataMissing as err:
        if not smoke.active():
            raise
        return _smoke_substitute("mnist", n_train, n_test, (1, 28, 28), (60000, 10000), seed, err)
    train_files: dict[str, Resolved] = {}
    if split in ("auto", "full"):
        try:
            train_files = reg.resolve("mnist", ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"])
        except DataMissing:
            if split == "full":
                raise
    timg = _read_idx(test_files["t10k-images-idx3-ubyte.gz"].location)
    tlab = _read_idx(test_files["t10k-labels-idx1-ubyte.gz"].location)
    if train_files:
        xtr, ytr = (_read_idx(train_files[n].location) for n in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"))
        xte, yte = timg, tlab
        desc, substitute = "MNIST, official split (60,000 train / 10,000 test)", False
    else:
        perm = np.random.default_rng(MNIST_RESPLIT["seed"]).permutation(len(timg))
        tr, te = perm[: MNIST_RESPLIT["n_train"]], perm[MNIST_RESPLIT["n_train"]:]
        xtr, ytr, xte, yte = timg[tr], tlab[tr], timg[te], tlab[te]
        desc = ("MNIST re-split of the official 10,000 test images (the training images are not available "
                f"offline): {len(tr):,} train / {len(te):,} test, split seed {MNIST_RESPLIT['seed']}")
        substitute = True
    n_train, n_test = _smoke_sizes("mnist", n_train, n_test, len(xtr), len(xte))
    rng = np.random.default_rng(seed)
    itr, ite = _subsample(len(xtr), n_train, rng), _subsample(len(xte), n_test, rng)
    desc = _subsample_note(desc, itr, ite, len(xtr), len(xte), seed)
    files = [r.as_dict() for r in (*test_files.values(), *train_files.values())]
    info = DataInfo("mnist", desc, files, len(itr), len(ite), substitute)
    return _idx_tensors(xtr, ytr, itr), _idx_tensors(xte, yte, ite), info


FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


def load_fashion_mnist(n_train: int | None = None, n_test: int | None = None, *, seed: int = 0,
                       registry: Registry | None = None):
    """Fashion-MNIST (Xiao, Rasul & Vollgraf 2017; 60,000 / 10,000 greyscale 28×28 article
    images in 10 balanced classes, :data:`FASHION_CLASSES`) as ``(train, test, info)``, in
    the same tensor layout as :func:`load_mnist` and read by the same IDX reader.
    ``n_train``/``n_test`` subsample (with ``seed``); the info says so."""
    reg = registry or Registry.default()
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz")
    try:
        files = reg.resolve("fashion-mnist", list(names))
    except DataMissing as err:
        if not smoke.active():
            raise
        return _smoke_substitute("fashion-mnist", n_train, n_test, (1, 28, 28), (60000, 10000), seed, err)
    xtr, ytr, xte, yte = (_read_idx(files[n].location) for n in names)
    n_train, n_test = _smoke_sizes("fashion-mnist", n_train, n_test, len(xtr), len(xte))
    rng = np.random.default_rng(seed)
    itr, ite = _subsample(len(xtr), n_train, rng), _subsample(len(xte), n_test, rng)
    desc = _subsample_note(f"Fashion-MNIST, official split ({len(xtr):,} train / {len(xte):,} test)",
                           itr, ite, len(xtr), len(xte), seed)
    info = DataInfo("fashion-mnist", desc, [r.as_dict() for r in files.values()], len(itr), len(ite))
    return _idx_tensors(xtr, ytr, itr), _idx_tensors(xte, yte, ite), info


_PLANETOID = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}


def load_planetoid(name: str, registry: Registry | None = None):
    """A Planetoid citation graph (standard public split) as ``(data, info)``, read with
    PyTorch Geometric from verified local files; nothing is fetched by PyG itself."""
    from compendium.progress import import_quietly_for_pyg

    import_quietly_for_pyg()
    from torch_geometric.io import read_planetoid_data

    key = name.lower()
    if key not in _PLANETOID:
        raise ValueError(f"unknown Planetoid dataset {name!r}; choose one of {sorted(_PLANETOID)}")
    reg = registry or Registry.default()
    files = reg.resolve(key)
    with tempfile.TemporaryDirectory() as tmp:
        for r in files.values():
            copy_to(r, Path(tmp))
        data = read_planetoid_data(tmp, _PLANETOID[key])
    info = DataInfo(key, f"{_PLANETOID[key]} (Planetoid public split: {int(data.train_mask.sum())} train / "
                    f"{int(data.val_mask.sum())} val / {int(data.test_mask.sum())} test nodes)",
                    [r.as_dict() for r in files.values()], int(data.train_mask.sum()), int(data.test_mask.sum()))
    return data, info


def load_cifar10(n_train: int | None = None, n_test: int | None = None, *, seed: int = 0,
                 registry: Registry | None = None):
    """CIFAR-10 (python version) as ``(train, test, info)``: images ``float32 [N, 3, 32, 32]``
    in [0, 1], labels ``int64``; read straight from the verified archive (no extraction)."""
    import io
    import pickle
    import tarfile

    import torch

    reg = registry or Registry.default()
    try:
        res = reg.resolve("cifar10")["cifar-10-python.tar.gz"]
    except DataMissing as err:
        if not smoke.active():
            raise
        return _smoke_substitute("cifar10", n_train, n_test, (3, 32, 32), (50000, 10000), seed, err)
    batches: dict[str, dict] = {}
    with tarfile.open(res.location, "r:gz") as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if name.startswith("data_batch_") or name == "test_batch":
                fh = tar.extractfile(member)
                batches[name] = pickle.load(io.BytesIO(fh.read()), encoding="bytes")  # the format is pickle
    train_names = sorted(n for n in batches if n.startswith("data_batch_"))
    if len(train_names) != 5 or "test_batch" not in batches:
        raise ValueError(f"{res.location}: expected 5 training batches and a test batch, found {sorted(batches)}")

    def stack(names):
        x = np.concatenate([batches[n][b"data"] for n in names]).reshape(-1, 3, 32, 32)
        y = np.concatenate([np.asarray(batches[n][b"labels"]) for n in names])
        return x, y

    xtr, ytr = stack(train_names)
    xte, yte = stack(["test_batch"])
    n_train, n_test = _smoke_sizes("cifar10", n_train, n_test, len(xtr), len(xte))
    rng = np.random.default_rng(seed)
    itr, ite = _subsample(len(xtr), n_train, rng), _subsample(len(xte), n_test, rng)
    desc = f"CIFAR-10, official split ({len(xtr):,} train / {len(xte):,} test)"
    if len(itr) < len(xtr) or len(ite) < len(xte):
        desc += f"; subsampled to {len(itr):,} train / {len(ite):,} test (seed {seed})"

    def tensors(x, y, idx):
        return torch.from_numpy(x[idx].astype(np.float32) / 255.0), torch.from_numpy(y[idx].astype(np.int64))

    return tensors(xtr, ytr, itr), tensors(xte, yte, ite), DataInfo("cifar10", desc, [res.as_dict()], len(itr), len(ite))


def load_images(dataset: str, n_train: int | None = None, n_test: int | None = None, *, seed: int = 0,
                registry: Registry | None = None, fallback: str = "mnist"):
    """``dataset`` = ``"cifar10"``, ``"mnist"``, ``"fashion-mnist"`` or ``"auto"`` (CIFAR-10 when
    its archive resolves, else ``fallback``: ``"mnist"`` or ``"fashion-mnist"``, the harder
    offline stand-in). Returns ``(train, test, info)``; the info says which ran and, for
    ``auto``, why (and marks the stand-in as a substitute)."""
    loaders = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist}
    if dataset not in ("auto", "cifar10", *loaders):
        raise ValueError(f"dataset must be 'auto', 'cifar10', 'mnist' or 'fashion-mnist', got {dataset!r}")
    if fallback not in loaders:
        raise ValueError(f"fallback must be 'mnist' or 'fashion-mnist', got {fallback!r}")
    reg = registry or Registry.default()
    if dataset in ("auto", "cifar10"):
        try:
            if dataset == "auto":
                reg.resolve("cifar10")  # absent: the fallback (smoke mode too; only an explicit cifar10 is synthesised)
            return load_cifar10(n_train, n_test, seed=seed, registry=reg)
        except DataMissing:
            if dataset == "cifar10":
                raise
    name = fallback if dataset == "auto" else dataset
    train, test, info = loaders[name](n_train, n_test, seed=seed, registry=reg)
    if dataset == "auto":
        info.description = "CIFAR-10 did not resolve, so: " + info.description
        info.substitute = True
    return train, test, info


def load_omniglot_small(size: int = 28, registry: Registry | None = None):
    """The two small Omniglot background subsets, merged by (alphabet, character), as
    ``(images, labels, classes, info)``: images ``float32 [N, 1, size, size]`` with ink = 1
    (the PNGs are black strokes on white), labels ``int64`` character ids indexing ``classes``
    (``"alphabet/characterNN"``). Read straight from the verified zips (no extraction)."""
    import io
    import zipfile

    import torch
    from PIL import Image

    if not 8 <= size <= 105:
        raise ValueError(f"size must be in 8..105 (the originals are 105 x 105), got {size}")
    reg = registry or Registry.default()
    files = reg.resolve("omniglot-small", ["omniglot/raw/images_background_small1.zip",
                                           "omniglot/raw/images_background_small2.zip"])
    drawings: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for res in files.values():
        with zipfile.ZipFile(res.location) as z:
            for name in z.namelist():
                parts = name.split("/")
                if len(parts) != 4 or not parts[3].endswith(".png"):
                    continue
                key = (parts[1], parts[2])
                if parts[3] in drawings.get(key, {}):
                    continue  # the same drawing in both subsets
                img = Image.open(io.BytesIO(z.read(name))).convert("L").resize((size, size), Image.BOX)
                drawings.setdefault(key, {})[parts[3]] = 1.0 - np.asarray(img, dtype=np.float32) / 255.0
    classes = sorted(drawings)
    xs, ys = [], []
    for i, key in enumerate(classes):
        for fname in sorted(drawings[key]):
            xs.append(drawings[key][fname])
            ys.append(i)
    images = torch.from_numpy(np.stack(xs)).unsqueeze(1)
    labels = torch.tensor(ys, dtype=torch.int64)
    info = DataInfo("omniglot-small", f"Omniglot small background subsets 1+2: {len(classes)} characters, "
                    f"{len(ys):,} drawings at {size}x{size} (the full background/evaluation sets are not available offline)",
                    [r.as_dict() for r in files.values()], len(ys), 0, True)
    return images, labels, [f"{a}/{c}" for a, c in classes], info
