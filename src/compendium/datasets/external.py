"""Datasets read through the ecosystem's loaders: the event-camera sets through ``tonic``, and
ImageNet in torchvision's ``ImageFolder`` layout, supplied by the user.

**Event datasets** (N-MNIST, CIFAR10-DVS, DVS128 Gesture): the archives are registered in
``registry.yaml`` with tonic's canonical URLs and md5 sums and resolve like every other file
(cache → mirror → verified download → :class:`DataMissing` naming the files, their checksums
and where to put them). :func:`load_events` then hands a folder holding the verified archives to
tonic's own dataset class, which extracts them (into the cache, never the mirror) and reads the
events; ``frames=T`` applies tonic's ``ToFrame`` transform (``[T, 2, H, W]`` event counts per
bin). Offline, the chapters keep the frame-to-event stand-ins (:mod:`compendium.events`).

**ImageNet** cannot be redistributed: :func:`check_image_folder` checks a user-supplied tree
(``<root>/train/<class>/*``, ``<root>/val/<class>/*``) for its layout and class count and says
exactly what is missing; :func:`load_imagenet` returns torchvision-style ``ImageFolder`` datasets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compendium.datasets.registry import DataMissing, Registry

IMAGENET_ENV = "COMPENDIUM_IMAGENET"
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# registry name -> (tonic class name, {split: archive file name}, sensor size (W, H, polarities), classes)
EVENT_DATASETS: dict[str, tuple[str, dict[str, str], tuple[int, int, int], int]] = {
    "nmnist": ("NMNIST", {"train": "train.zip", "test": "test.zip"}, (34, 34, 2), 10),
    "dvs-cifar10": ("CIFAR10DVS", {"all": "CIFAR10DVS.zip"}, (128, 128, 2), 10),
    "dvs-gesture": ("DVSGesture", {"train": "ibmGestureTrain.tar.gz", "test": "ibmGestureTest.tar.gz"},
                    (128, 128, 2), 11),
}


def event_shape(name: str, T: int) -> tuple[int, ...]:
    """The frame shape ``[T, polarities, H, W]`` that :func:`load_events` with ``frames=T`` yields."""
    _cls, _files, (w, h, p), _n = EVENT_DATASETS[name]
    return (T, p, h, w)


def load_events(name: str, split: str = "train", *, frames: int | None = None, registry: Registry | None = None,
                root: Path | None = None):
    """An event-camera dataset through tonic: ``"nmnist"``, ``"dvs-cifar10"`` or ``"dvs-gesture"``.

    ``split``: ``"train"`` or ``"test"`` (CIFAR10-DVS has no official split: ``"all"``). The
    archives are resolved and verified first (cache → mirror → download); offline without them
    this raises :class:`DataMissing` naming each archive, its md5, where it was looked for and
    where to put it. ``frames=T`` returns frames ``[T, 2, H, W]`` (tonic ``ToFrame`` with T
    time bins). Returns the tonic dataset (indexable: ``(events or frames, label)``)."""
    if name not in EVENT_DATASETS:
        raise KeyError(f"unknown event dataset {name!r}; choose one of {sorted(EVENT_DATASETS)}")
    cls_name, archives, sensor, _classes = EVENT_DATASETS[name]
    if split not in archives:
        raise ValueError(f"{name} has the splits {sorted(archives)}, not {split!r}")
    reg = registry or Registry.default()
    resolved = reg.resolve(name, [archives[split]])  # DataMissing: the clear offline error
    import tonic

    base = Path(root) if root else reg.cache_dir / "tonic"
    folder = base / cls_name
    folder.mkdir(parents=True, exist_ok=True)
    for r in resolved.values():  # tonic wants the archive in its own folder: link the verified copy there
        target = folder / r.file.name
        if not target.exists():
            try:
                os.symlink(r.location, target)
            except OSError:
                import shutil

                shutil.copyfile(r.location, target)
    transform = tonic.transforms.ToFrame(sensor_size=sensor, n_time_bins=frames) if frames else None
    cls = getattr(tonic.datasets, cls_name)
    kwargs: dict[str, Any] = {"save_to": str(base), "transform": transform}
    if split != "all":
        kwargs["train"] = split == "train"
    return cls(**kwargs)


# --- ImageNet, user-supplied -------------------------------------------------------------------

@dataclass
class ImageFolderReport:
    """What :func:`check_image_folder` found: classes and image counts per split, and problems."""

    root: Path
    classes: dict[str, list[str]] = field(default_factory=dict)   # split -> class folder names
    images: dict[str, int] = field(default_factory=dict)          # split -> image files
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def imagenet_root(registry: Registry | None = None) -> Path | None:
    """Where ImageNet is looked for: ``$COMPENDIUM_IMAGENET``, else ``imagenet/`` in the cache,
    then in the mirror; the first that exists (``None``: none does)."""
    if os.environ.get(IMAGENET_ENV):
        return Path(os.environ[IMAGENET_ENV])
    reg = registry or Registry.default()
    for base in (reg.cache_dir, reg.mirror_dir):
        if base is not None and (Path(base) / "imagenet").is_dir():
            return Path(base) / "imagenet"
    return None


def check_image_folder(root: Path | str, n_classes: int = 1000, splits: tuple[str, ...] = ("train", "val"),
                       min_per_class: int = 1) -> ImageFolderReport:
    """Check a torchvision ``ImageFolder`` tree: every split folder exists, holds ``n_classes``
    class folders, each with at least ``min_per_class`` images, and the splits name the same
    classes. Returns the report; its ``problems`` say exactly what is missing or wrong."""
    root = Path(root)
    rep = ImageFolderReport(root)
    if not root.is_dir():
        rep.problems.append(f"{root} does not exist: put ImageNet there as {root}/train/<class>/*.JPEG and "
                            f"{root}/val/<class>/*.JPEG (torchvision ImageFolder layout), or set ${IMAGENET_ENV}")
        return rep
    for split in splits:
        d = root / split
        if not d.is_dir():
            rep.problems.append(f"{d}/ is missing (expected {n_classes} class folders of images)")
            continue
        classes = sorted(p.name for p in d.iterdir() if p.is_dir())
        rep.classes[split] = classes
        loose = [p.name for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if loose:
            rep.problems.append(f"{d}/ holds {len(loose)} image(s) directly (e.g. {loose[0]}); ImageFolder needs them "
                                f"in one folder per class (for ImageNet's val set: sort them into <wnid>/ folders)")
        if len(classes) != n_classes:
            rep.problems.append(f"{d}/ has {len(classes)} class folder(s), expected {n_classes}")
        count, empty = 0, []
        for c in classes:
            n = sum(1 for p in (d / c).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            count += n
            if n < min_per_class:
                empty.append(c)
        rep.images[split] = count
        if empty:
            rep.problems.append(f"{d}/: {len(empty)} class folder(s) with fewer than {min_per_class} image(s): "
                                + ", ".join(empty[:5]) + (" …" if len(empty) > 5 else ""))
    present = [s for s in splits if s in rep.classes]
    for s in present[1:]:
        a, b = set(rep.classes[present[0]]), set(rep.classes[s])
        if a != b:
            only = sorted(a - b)[:3] + sorted(b - a)[:3]
            rep.problems.append(f"{present[0]}/ and {s}/ name different classes ({len(a ^ b)} differ, e.g. "
                                + ", ".join(only) + ")")
    return rep


def load_imagenet(root: Path | str | None = None, *, n_classes: int = 1000, transform=None,
                  registry: Registry | None = None):
    """``(train, val)`` ``ImageFolder``-style datasets of a checked ImageNet tree; raises
    :class:`DataMissing` with every problem of the layout (:func:`check_image_folder`)."""
    where = Path(root) if root else imagenet_root(registry)
    if where is None:
        reg = registry or Registry.default()
        places = [str(reg.cache_dir / "imagenet")] + ([str(reg.mirror_dir / "imagenet")] if reg.mirror_dir else [])
        raise DataMissing("ImageNet is not available: it cannot be downloaded (its terms forbid redistribution). "
                          "Put it in torchvision's ImageFolder layout (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG, "
                          f"{n_classes} classes) at one of: {', '.join(places)}, or set ${IMAGENET_ENV}.")
    rep = check_image_folder(where, n_classes)
    if not rep.ok:
        raise DataMissing(f"ImageNet at {where} is not usable:\n  - " + "\n  - ".join(rep.problems))
    from torchvision.datasets import ImageFolder  # optional dependency: only needed with real ImageNet

    return ImageFolder(str(where / "train"), transform=transform), ImageFolder(str(where / "val"), transform=transform)
