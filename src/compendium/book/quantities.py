"""Measured quantities with their uncertainty: what a chapter reports, what the rules judge.

A chapter never decides a verdict; it reports *quantities*. Each carries an estimate, a
95 % interval, the number of replicates behind it and the method that produced the
interval, so that the comparison rules (:mod:`compendium.book.rules`) can say "the interval
clears the criterion", "the interval excludes it" or "it cannot tell at this scale".

Interval methods (all two-sided, 95 %):

``t``
    mean of independent replicates (seeds, independently initialised nets) with Student's
    t-interval, :math:`\\bar x \\pm t_{0.975,n-1}\\, s/\\sqrt n`.
``wilson``
    a proportion of ``k`` successes in ``n`` independent trials (attacked samples,
    simulation replicates, parameter draws) with Wilson's score interval
    :math:`\\frac{\\hat p + z^2/2n \\pm z\\sqrt{\\hat p(1-\\hat p)/n + z^2/4n^2}}{1+z^2/n}`.
``t + wilson``
    the mean of per-seed rates measured on the *same* ``n`` test items (one trained model
    per seed): the seeds' spread (t) does not contain the test set's own sampling error,
    which they share, so the two half-widths add in quadrature,
    :math:`\\bar p \\mp \\sqrt{h_t^2 + h_{W,\\mp}^2}` with :math:`h_{W,\\mp}` the distances from
    :math:`\\bar p` to the ends of Wilson's interval at :math:`\\bar p` over ``n``, clipped to [0, 1].
``bootstrap``
    any statistic of i.i.d. samples (e.g. a median perturbation size) with the percentile
    bootstrap (2,000 resamples, fixed seed).
``1 run``
    a single measurement: no interval can be computed, so the estimate is used as a point
    (the scoreboard says "1 run").
``exact``
    a deterministic result (an equation check, a modelled number from declared
    constants): no sampling uncertainty.

Differences of two quantities (:func:`difference`) use a paired t-interval when both carry
per-replicate samples of the same replicates, and otherwise the MOVER combination of the
two independent intervals (Zou & Donner 2008; for two Wilson intervals it is Newcombe's
hybrid score interval), :math:`L = d - \\sqrt{(a-l_a)^2 + (u_b-b)^2}`,
:math:`U = d + \\sqrt{(u_a-a)^2 + (b-l_b)^2}`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np

Z95 = 1.959963984540054
METHODS = ("t", "wilson", "t + wilson", "bootstrap", "1 run", "exact", "paired t", "mover", "given")


def _finite(x: float) -> bool:
    return x is not None and math.isfinite(float(x))


@dataclass(frozen=True)
class Quantity:
    """One measured quantity: ``estimate`` with 95 % interval ``[low, high]`` from ``n`` replicates."""

    name: str
    estimate: float
    low: float
    high: float
    n: int
    method: str
    unit: str = ""
    samples: tuple[float, ...] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"quantity '{self.name}': unknown interval method {self.method!r}; one of {METHODS}")
        if not (_finite(self.estimate) and _finite(self.low) and _finite(self.high)):
            raise ValueError(f"quantity '{self.name}': estimate and interval must be finite numbers, got "
                             f"{self.estimate!r} [{self.low!r}, {self.high!r}] (report it as unavailable instead)")
        if not self.low <= self.estimate <= self.high:
            raise ValueError(f"quantity '{self.name}': estimate {self.estimate} lies outside its interval "
                             f"[{self.low}, {self.high}]")
        if self.n < 1:
            raise ValueError(f"quantity '{self.name}': n must be at least 1")

    # --- constructors ------------------------------------------------------------------
    @classmethod
    def single(cls, name: str, value: float, unit: str = "") -> "Quantity":
        """One run: the value is a point; rules treat it as exact but the book says "1 run"."""
        v = float(value)
        return cls(name, v, v, v, 1, "1 run", unit)

    @classmethod
    def exact(cls, name: str, value: float, unit: str = "") -> "Quantity":
        """A deterministic result (equation check, model output from declared constants)."""
        v = float(value)
        return cls(name, v, v, v, 1, "exact", unit)

    @classmethod
    def from_samples(cls, name: str, samples: Iterable[float], unit: str = "") -> "Quantity":
        """Mean of independent replicates with a t-interval (one sample: a single run)."""
        x = np.asarray(list(samples), dtype=float)
        if x.size == 0 or not np.all(np.isfinite(x)):
            raise ValueError(f"quantity '{name}': samples must be a non-empty list of finite numbers, got {x.tolist()}")
        if x.size == 1:
            return cls(name, float(x[0]), float(x[0]), float(x[0]), 1, "1 run", unit, (float(x[0]),))
        from scipy import stats

        m, s = float(x.mean()), float(x.std(ddof=1))
        h = float(stats.t.ppf(0.975, x.size - 1)) * s / math.sqrt(x.size)
        return cls(name, m, m - h, m + h, int(x.size), "t", unit, tuple(float(v) for v in x))

    @classmethod
    def rate(cls, name: str, successes: float, trials: int, unit: str = "") -> "Quantity":
        """A proportion ``successes / trials`` with Wilson's score interval."""
        n = int(trials)
        if n < 1 or not 0 <= successes <= n:
            raise ValueError(f"quantity '{name}': need 0 <= successes <= trials and trials >= 1, got {successes}/{trials}")
        p = float(successes) / n
        z2 = Z95 ** 2
        centre = (p + z2 / (2 * n)) / (1 + z2 / n)
        half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
        lo, hi = max(0.0, centre - half), min(1.0, centre + half)
        return cls(name, p, min(lo, p), max(hi, p), n, "wilson", unit)

    @classmethod
    def seed_rates(cls, name: str, rates: Iterable[float], n_items: int, unit: str = "") -> "Quantity":
        """Mean of per-seed rates on the same ``n_items`` test items (``t + wilson``, see the
        module docstring); one rate: Wilson's interval over the items."""
        x = np.asarray(list(rates), dtype=float)
        if x.size == 0 or not np.all((x >= 0) & (x <= 1)):
            raise ValueError(f"quantity '{name}': rates must be a non-empty list in [0, 1], got {x.tolist()}")
        n = int(n_items)
        if x.size == 1:
            return cls.rate(name, int(round(float(x[0]) * n)), n, unit)
        t = cls.from_samples(name, x)
        m, ht = t.estimate, t.high - t.estimate
        w = cls.rate(name, m * n, n)  # Wilson at the mean (a fractional count is fine for the interval)
        lo = max(0.0, m - math.hypot(ht, m - w.low))
        hi = min(1.0, m + math.hypot(ht, w.high - m))
        return cls(name, m, lo, hi, int(x.size), "t + wilson", unit, t.samples)

    @classmethod
    def bootstrap(cls, name: str, samples: Iterable[float], statistic: Callable[[np.ndarray], float] = np.median,
                  unit: str = "", resamples: int = 2000, seed: int = 0) -> "Quantity":
        """A statistic of i.i.d. samples with a percentile-bootstrap interval."""
        x = np.asarray(list(samples), dtype=float)
        if x.size == 0 or not np.all(np.isfinite(x)):
            raise ValueError(f"quantity '{name}': samples must be a non-empty list of finite numbers")
        est = float(statistic(x))
        if x.size == 1:
            return cls(name, est, est, est, 1, "1 run", unit)
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, x.size, size=(resamples, x.size))
        boots = np.array([statistic(x[i]) for i in idx], dtype=float)
        lo, hi = (float(v) for v in np.percentile(boots, [2.5, 97.5]))
        return cls(name, est, min(lo, est), max(hi, est), int(x.size), "bootstrap", unit)

    @classmethod
    def given(cls, name: str, estimate: float, low: float, high: float, n: int, unit: str = "") -> "Quantity":
        """An interval computed elsewhere (e.g. a sandwich-based interval), taken as given."""
        return cls(name, float(estimate), float(low), float(high), int(n), "given", unit)

    # --- reading -----------------------------------------------------------------------
    @property
    def is_point(self) -> bool:
        return self.low == self.high

    def text(self, fmt: str = ".4g") -> str:
        """``0.935 [0.921, 0.949] (n=3, t)``; single runs read ``0.935 (1 run)``."""
        u = self.unit
        if self.method in ("1 run", "exact"):
            return f"{self.estimate:{fmt}}{u} ({self.method})"
        return f"{self.estimate:{fmt}}{u} [{self.low:{fmt}}, {self.high:{fmt}}] (n={self.n}, {self.method})"

    def as_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "estimate": self.estimate, "low": self.low, "high": self.high, "n": self.n,
             "method": self.method, "unit": self.unit}
        if self.samples is not None:
            d["samples"] = list(self.samples)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Quantity":
        s = d.get("samples")
        return cls(d["name"], float(d["estimate"]), float(d["low"]), float(d["high"]), int(d["n"]), d["method"],
                   d.get("unit", ""), tuple(s) if s is not None else None)


def difference(a: Quantity, b: Quantity, *, paired: bool = False, name: str | None = None) -> Quantity:
    """``a − b`` with a 95 % interval: paired t over shared replicates, else MOVER.

    ``paired`` needs both quantities to carry samples of the same replicates (same length,
    same order, e.g. seed i of both); it is an error to ask for pairing otherwise."""
    label = name or f"{a.name} − {b.name}"
    if paired:
        if a.samples is None or b.samples is None or len(a.samples) != len(b.samples):
            raise ValueError(f"{label}: a paired difference needs per-replicate samples of equal length for both "
                             f"'{a.name}' ({None if a.samples is None else len(a.samples)}) and "
                             f"'{b.name}' ({None if b.samples is None else len(b.samples)})")
        q = Quantity.from_samples(label, np.subtract(a.samples, b.samples), a.unit)
        return Quantity(label, q.estimate, q.low, q.high, q.n, "paired t" if q.n > 1 else "1 run", a.unit, q.samples)
    d = a.estimate - b.estimate
    lo = d - math.hypot(a.estimate - a.low, b.high - b.estimate)
    hi = d + math.hypot(a.high - a.estimate, b.estimate - b.low)
    n = min(a.n, b.n)
    single = a.is_point and b.is_point
    method = ("exact" if a.method == b.method == "exact" else "1 run") if single else "mover"
    return Quantity(label, d, lo, hi, n, method, a.unit)

