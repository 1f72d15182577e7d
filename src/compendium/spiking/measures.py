"""Quantities the deep spiking-ResNet chapters (STBP-tdBN, MS-ResNet) report for their claims.

Each function turns what a chapter measured (test accuracies over a known number of test
images, a depth sweep) into :class:`~compendium.book.quantities.Quantity` objects with 95 %
intervals; the verdicts come from the rules in ``data/papers/<chapter>.yaml``.

A test accuracy is a rate over the test images: ``round(accuracy · n_test)`` correct out of
``n_test`` with Wilson's interval. That interval reflects the size of the test set, not the
variation between training runs; where a chapter trains several seeds, the quantity is the
mean over seeds, whose interval adds the seeds' t half-width and the shared test set's Wilson
half-width in quadrature (:meth:`Quantity.seed_rates`, method ``t + wilson``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from compendium.book.quantities import Quantity


def _correct(accuracy: float, n_test: int) -> int:
    if n_test < 1 or not 0.0 <= float(accuracy) <= 1.0:
        raise ValueError(f"need an accuracy in [0, 1] over n_test >= 1 images, got {accuracy!r} over {n_test!r}")
    return int(round(float(accuracy) * int(n_test)))


def accuracy_rate(name: str, accuracy: float, n_test: int) -> Quantity:
    """Test accuracy as a rate over ``n_test`` test images (Wilson interval)."""
    return Quantity.rate(name, _correct(accuracy, n_test), int(n_test))


def above_chance(name: str, accuracy: float | Sequence[float], n_test: int, classes: int) -> Quantity:
    """Test accuracy minus chance (``1 / classes``).

    One accuracy (one trained net): the Wilson interval of the accuracy over ``n_test``
    images, shifted by the exact chance level — it covers the test set's sampling, not the
    spread between training runs. Several accuracies (one per seed, independently trained
    nets, all on the same test images): the mean with the ``t + wilson`` interval
    (:meth:`~compendium.book.quantities.Quantity.seed_rates`), which covers both; shifted by
    chance, so it stays within ``[−1/classes, 1 − 1/classes]``."""
    if classes < 2:
        raise ValueError(f"chance needs at least two classes, got {classes}")
    c = 1.0 / int(classes)
    accs = [float(a) for a in np.atleast_1d(np.asarray(accuracy, dtype=float))]
    for a in accs:
        _correct(a, n_test)  # the same checks for every accuracy
    q = Quantity.seed_rates(name, accs, int(n_test))
    return Quantity(name, q.estimate - c, q.low - c, q.high - c, q.n, q.method, q.unit,
                    None if q.samples is None else tuple(v - c for v in q.samples))


def depth_sweep_ends(rows: list[dict[str, Any]], n_test: int, prefix: str) -> tuple[Quantity, Quantity]:
    """The deepest net of a depth sweep against the best shallower one.

    ``rows`` are one block kind's sweep results (``depth``, ``test_acc``, and ``seed`` where the
    sweep trained several seeds). Returns the test accuracy of the deepest net
    (``<prefix>_deepest``) and of the shallower depth with the highest (mean) accuracy
    (``<prefix>_best_shallower``). One row per depth: a rate over ``n_test`` images (Wilson).
    Several rows per depth (one per seed, independently trained nets on the same test images):
    the mean over the seeds with the ``t + wilson`` interval, which covers the spread between
    training runs as well as the test set's sampling. Choosing the best shallower depth by its point estimate makes the
    comparison harder for the deepest net, never easier. Needs at least two distinct depths."""
    depths = sorted({int(r["depth"]) for r in rows})
    if len(depths) < 2:
        raise ValueError(f"a depth sweep needs at least two depths to compare, got {depths}")
    by_depth = {d: sorted((r for r in rows if int(r["depth"]) == d), key=lambda r: int(r.get("seed", 0)))
                for d in depths}

    def mean(rs: list[dict[str, Any]]) -> float:
        return sum(float(r["test_acc"]) for r in rs) / len(rs)

    def quantity(name: str, rs: list[dict[str, Any]]) -> Quantity:
        accs = [float(r["test_acc"]) for r in rs]
        for a in accs:
            _correct(a, n_test)  # the same checks as one accuracy
        return Quantity.seed_rates(name, accs, int(n_test))

    best = max(depths[:-1], key=lambda d: mean(by_depth[d]))
    return quantity(f"{prefix}_deepest", by_depth[depths[-1]]), quantity(f"{prefix}_best_shallower", by_depth[best])
