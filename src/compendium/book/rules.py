"""The named comparison rules that judge every claim, declared as data in the claims files.

Each rule reads named quantities (:class:`~compendium.book.quantities.Quantity`) and
divides the line of a statistic into *zones*: the values at which the claim is reproduced,
partly reproduced, or not reproduced. The verdict is decided only when the whole 95 %
interval of the statistic lies inside one zone; an interval that straddles a boundary
gives **inconclusive at this scale**, and the reason shows the interval and ``n``. A single
run is a point and is always decided (the book marks it "1 run").

Rules (the ``kind`` key in a claim's ``rule:``):

``value``       ``{quantity, tolerance, factor?}`` — ours within ``tolerance`` of the published
                number: reproduced; within twice: partly; further: not reproduced.
``range``       ``{quantity, factor?}`` — inside the published ``[low, high]``: reproduced; within
                25 % of its width outside: partly; further: not reproduced.
``threshold``   ``{quantity, above|at_least|below|at_most: x, partly: y?}`` — the statistic clears
                ``x``: reproduced; only the weaker bound ``y``: partly; neither: not reproduced.
``ordering``    ``{better, worse, direction: higher|lower, margin: m, partly_margin?, paired?}`` —
                the difference (``better − worse``, or reversed for ``lower``) exceeds ``m``.
``equivalence`` ``{a, b, delta, partly_delta?, paired?}`` — ``|a − b| ≤ delta``.
``trend``       ``{series: [q1, …], direction, tolerance?, paired?}`` — every consecutive step of a
                sweep moves in ``direction`` (``not_decreasing`` allows drops up to ``tolerance``).
``all_of``      ``{parts: [rule, …], partial?}`` — every part must hold; with ``partial: true`` some
                but not all holding gives "partly". Undecided parts make the whole undecided only
                when their outcome could change the combined verdict.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from compendium.book.quantities import Quantity, difference

REPRODUCED = "reproduced"
PARTLY = "partly"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive at this scale"
DECIDED = (REPRODUCED, PARTLY, NOT_REPRODUCED)

INF = math.inf


@dataclass(frozen=True)
class Zone:
    """An interval of the statistic's line, ``lo``–``hi`` (each end open or closed)."""

    verdict: str
    lo: float
    hi: float
    lo_closed: bool = True
    hi_closed: bool = True

    def contains(self, x: float) -> bool:
        above = x > self.lo or (self.lo_closed and x == self.lo)
        below = x < self.hi or (self.hi_closed and x == self.hi)
        return above and below

    def touches(self, lo: float, hi: float) -> bool:
        """Whether the closed interval ``[lo, hi]`` and this zone share a point."""
        left, left_closed = (lo, True) if lo > self.lo else (self.lo, self.lo_closed)
        right, right_closed = (hi, True) if hi < self.hi else (self.hi, self.hi_closed)
        return left < right or (left == right and left_closed and right_closed)


@dataclass(frozen=True)
class Outcome:
    """A rule's result: the decided verdict (or inconclusive), the verdicts the interval still
    allows, the statistic as text (with its interval) and the criterion it was judged on."""

    verdict: str
    possible: frozenset[str]
    ours: str
    criterion: str
    n: int
    method: str


def _zone_outcome(stat: Quantity, zones: list[Zone], criterion: str, fmt: str = ".4g") -> Outcome:
    possible = frozenset(z.verdict for z in zones if z.touches(stat.low, stat.high))
    if not possible:  # cannot happen for zones that cover the line; a guard against a malformed rule
        raise ValueError(f"{criterion}: zones do not cover {stat.low}..{stat.high}")
    verdict = next(iter(possible)) if len(possible) == 1 else INCONCLUSIVE
    return Outcome(verdict, possible, stat.text(fmt), criterion, stat.n, stat.method)


def _band_zones(lo: float, hi: float, margin: float | None) -> list[Zone]:
    """Reproduced inside ``[lo, hi]``; partly within ``margin`` outside it (if given); not reproduced beyond."""
    zones = [Zone(REPRODUCED, lo, hi)]
    if margin is None:
        return zones + [Zone(NOT_REPRODUCED, -INF, lo, hi_closed=False), Zone(NOT_REPRODUCED, hi, INF, lo_closed=False)]
    return zones + [Zone(PARTLY, lo - margin, lo, hi_closed=False), Zone(PARTLY, hi, hi + margin, lo_closed=False),
                    Zone(NOT_REPRODUCED, -INF, lo - margin, hi_closed=False),
                    Zone(NOT_REPRODUCED, hi + margin, INF, lo_closed=False)]


def _one_sided(stat: Quantity, bound: float, partly: float | None, higher: bool, strict: bool, label: str) -> Outcome:
    """Zones for "statistic above ``bound`` (reproduced), above ``partly`` (partly)" or the mirror."""
    op = (">" if strict else "≥") if higher else ("<" if strict else "≤")
    crit = f"{label} {op} {bound:g}" + (f" (partly if {op} {partly:g})" if partly is not None else "")
    if higher:
        zones = [Zone(REPRODUCED, bound, INF, lo_closed=not strict)]
        if partly is not None:
            zones += [Zone(PARTLY, partly, bound, lo_closed=not strict, hi_closed=strict),
                      Zone(NOT_REPRODUCED, -INF, partly, hi_closed=strict)]
        else:
            zones += [Zone(NOT_REPRODUCED, -INF, bound, hi_closed=strict)]
    else:
        zones = [Zone(REPRODUCED, -INF, bound, hi_closed=not strict)]
        if partly is not None:
            zones += [Zone(PARTLY, bound, partly, lo_closed=strict, hi_closed=not strict),
                      Zone(NOT_REPRODUCED, partly, INF, lo_closed=strict)]
        else:
            zones += [Zone(NOT_REPRODUCED, bound, INF, lo_closed=strict)]
    return _zone_outcome(stat, zones, crit)


class Rule:
    kind = ""

    def quantities(self) -> list[str]:
        raise NotImplementedError

    def evaluate(self, q: Mapping[str, Quantity], published: Any = None) -> Outcome:
        raise NotImplementedError

    def describe(self, published: Any = None) -> str:
        raise NotImplementedError

    def verdicts(self) -> set[str]:
        """The decided verdicts this rule can give (inconclusive aside)."""
        return {REPRODUCED, NOT_REPRODUCED} | ({PARTLY} if getattr(self, "partly", None) is not None else set())


def _req(spec: Mapping[str, Any], key: str, kind: str) -> Any:
    if key not in spec:
        raise ValueError(f"a '{kind}' rule needs '{key}' (got keys {sorted(spec)})")
    return spec[key]


def scaled(q: Quantity, factor: float) -> Quantity:
    """``q`` in the rule's units (e.g. ×100 for an accuracy compared in percent)."""
    if factor == 1:
        return q
    return Quantity(q.name, q.estimate * factor, q.low * factor, q.high * factor, q.n, q.method, q.unit)


class ValueRule(Rule):
    """``|ours − published| ≤ tolerance``: reproduced; ``≤ 2·tolerance``: partly."""

    kind = "value"

    def __init__(self, spec: Mapping[str, Any]):
        self.q = _req(spec, "quantity", self.kind)
        self.tol = spec.get("tolerance")
        self.factor = float(spec.get("factor", 1))

    def quantities(self) -> list[str]:
        return [self.q]

    def evaluate(self, q, published=None):
        if self.tol is None:
            raise ValueError("a value rule needs a 'tolerance' once its published value is transcribed")
        p, t = float(published), float(self.tol)
        return _zone_outcome(scaled(q[self.q], self.factor), _band_zones(p - t, p + t, t), self.describe(published))

    def describe(self, published=None):
        f = f"{self.factor:g}·" if self.factor != 1 else ""
        return f"|{f}{self.q} − {published}| ≤ {self.tol} (partly ≤ {2 * float(self.tol or 0):g})"

    def verdicts(self):
        return set(DECIDED)


class RangeRule(Rule):
    """Inside ``[low, high]``: reproduced; within a quarter of its width outside: partly."""

    kind = "range"

    def __init__(self, spec):
        self.q = _req(spec, "quantity", self.kind)
        self.factor = float(spec.get("factor", 1))

    def quantities(self):
        return [self.q]

    def evaluate(self, q, published=None):
        lo, hi = (float(x) for x in published)
        return _zone_outcome(scaled(q[self.q], self.factor), _band_zones(lo, hi, 0.25 * (hi - lo)),
                             self.describe(published))

    def describe(self, published=None):
        f = f"{self.factor:g}·" if self.factor != 1 else ""
        return f"{f}{self.q} inside {published} (partly within 25 % of its width outside)"

    def verdicts(self):
        return set(DECIDED)


class ThresholdRule(Rule):
    """A statistic above (or below) a bound; ``partly`` names a weaker bound."""

    kind = "threshold"
    _OPS = {"above": (True, True), "at_least": (True, False), "below": (False, True), "at_most": (False, False)}

    def __init__(self, spec):
        self.q = _req(spec, "quantity", self.kind)
        ops = [k for k in self._OPS if k in spec]
        if len(ops) != 1:
            raise ValueError(f"a threshold rule needs exactly one of {list(self._OPS)} (got {sorted(spec)})")
        self.op = ops[0]
        self.bound = float(spec[self.op])
        self.partly = None if spec.get("partly") is None else float(spec["partly"])
        higher, _ = self._OPS[self.op]
        if self.partly is not None and (self.partly >= self.bound if higher else self.partly <= self.bound):
            raise ValueError(f"threshold on '{self.q}': the 'partly' bound {self.partly} must be weaker than {self.bound}")

    def quantities(self):
        return [self.q]

    def evaluate(self, q, published=None):
        higher, strict = self._OPS[self.op]
        return _one_sided(q[self.q], self.bound, self.partly, higher, strict, self.q)

    def describe(self, published=None):
        higher, strict = self._OPS[self.op]
        op = (">" if strict else "≥") if higher else ("<" if strict else "≤")
        return f"{self.q} {op} {self.bound:g}" + (f" (partly {op} {self.partly:g})" if self.partly is not None else "")


class OrderingRule(Rule):
    """``better`` beats ``worse`` by more than ``margin`` (higher or lower is better)."""

    kind = "ordering"

    def __init__(self, spec):
        self.better = _req(spec, "better", self.kind)
        self.worse = _req(spec, "worse", self.kind)
        self.direction = spec.get("direction", "higher")
        if self.direction not in ("higher", "lower"):
            raise ValueError(f"ordering direction must be 'higher' or 'lower', got {self.direction!r}")
        self.margin = float(spec.get("margin", 0.0))
        self.partly = None if spec.get("partly_margin") is None else float(spec["partly_margin"])
        if self.partly is not None and self.partly >= self.margin:
            raise ValueError(f"ordering {self.better} vs {self.worse}: partly_margin must be below margin")
        self.paired = bool(spec.get("paired", False))

    def quantities(self):
        return [self.better, self.worse]

    def _diff(self, q):
        a, b = q[self.better], q[self.worse]
        if self.direction == "higher":
            return difference(a, b, paired=self.paired, name=f"{self.better} − {self.worse}")
        return difference(b, a, paired=self.paired, name=f"{self.worse} − {self.better}")

    def evaluate(self, q, published=None):
        d = self._diff(q)
        return _one_sided(d, self.margin, self.partly, True, True, d.name)

    def describe(self, published=None):
        d = f"{self.better} − {self.worse}" if self.direction == "higher" else f"{self.worse} − {self.better}"
        return f"{d} > {self.margin:g}" + (f" (partly > {self.partly:g})" if self.partly is not None else "") + \
            (" (paired)" if self.paired else "")


class EquivalenceRule(Rule):
    """``|a − b| ≤ delta`` (partly ``≤ partly_delta``)."""

    kind = "equivalence"

    def __init__(self, spec):
        self.a = _req(spec, "a", self.kind)
        self.b = _req(spec, "b", self.kind)
        self.delta = float(_req(spec, "delta", self.kind))
        self.partly = None if spec.get("partly_delta") is None else float(spec["partly_delta"])
        if self.partly is not None and self.partly <= self.delta:
            raise ValueError(f"equivalence {self.a} vs {self.b}: partly_delta must exceed delta")
        self.paired = bool(spec.get("paired", False))

    def quantities(self):
        return [self.a, self.b]

    def evaluate(self, q, published=None):
        d = difference(q[self.a], q[self.b], paired=self.paired, name=f"{self.a} − {self.b}")
        zones = _band_zones(-self.delta, self.delta, None if self.partly is None else self.partly - self.delta)
        return _zone_outcome(d, zones, self.describe())

    def describe(self, published=None):
        return f"|{self.a} − {self.b}| ≤ {self.delta:g}" + (f" (partly ≤ {self.partly:g})" if self.partly is not None else "")


def _combine(verdicts: Iterable[str], partial: bool) -> str:
    vs = list(verdicts)
    if all(v == REPRODUCED for v in vs):
        return REPRODUCED
    if partial:
        return NOT_REPRODUCED if all(v == NOT_REPRODUCED for v in vs) else PARTLY
    return NOT_REPRODUCED if any(v == NOT_REPRODUCED for v in vs) else PARTLY


def _combined_outcome(outcomes: list[Outcome], partial: bool, criterion: str) -> Outcome:
    # every verdict the parts could still take; the whole is decided when all of them agree
    options = [sorted(o.possible) for o in outcomes]
    results = frozenset(_combine(combo, partial) for combo in itertools.product(*options))
    verdict = next(iter(results)) if len(results) == 1 else INCONCLUSIVE
    ours = "; ".join(o.ours for o in outcomes)
    n = min(o.n for o in outcomes)
    methods = sorted({o.method for o in outcomes})
    return Outcome(verdict, results, ours, criterion, n, "/".join(methods))


class AllOfRule(Rule):
    kind = "all_of"

    def __init__(self, spec):
        parts = _req(spec, "parts", self.kind)
        if not parts:
            raise ValueError("an all_of rule needs at least one part")
        self.parts = [parse_rule(p) for p in parts]
        self.partial = bool(spec.get("partial", False))

    def quantities(self):
        return [n for p in self.parts for n in p.quantities()]

    def evaluate(self, q, published=None):
        return _combined_outcome([p.evaluate(q, published) for p in self.parts], self.partial, self.describe(published))

    def describe(self, published=None):
        joined = " and ".join(f"[{p.describe(published)}]" for p in self.parts)
        return joined + (" (partly if some hold)" if self.partial else "")

    def verdicts(self):
        parts = [p.verdicts() for p in self.parts]
        return {_combine(combo, self.partial) for combo in itertools.product(*parts)}


class TrendRule(Rule):
    """Every consecutive step of a sweep moves in one direction (within ``tolerance``)."""

    kind = "trend"
    _DIRS = ("increasing", "not_decreasing", "decreasing", "not_increasing")

    def __init__(self, spec):
        self.series = list(_req(spec, "series", self.kind))
        if len(self.series) < 2:
            raise ValueError("a trend rule needs a series of at least two quantities")
        self.direction = spec.get("direction", "not_decreasing")
        if self.direction not in self._DIRS:
            raise ValueError(f"trend direction must be one of {self._DIRS}, got {self.direction!r}")
        self.tol = float(spec.get("tolerance", 0.0))
        self.paired = bool(spec.get("paired", False))
        up = self.direction in ("increasing", "not_decreasing")
        margin = self.tol if self.direction in ("increasing", "decreasing") else -self.tol
        self.steps = [OrderingRule({"better": b if up else a, "worse": a if up else b, "margin": margin,
                                    "paired": self.paired}) for a, b in zip(self.series, self.series[1:])]

    def quantities(self):
        return list(self.series)

    def evaluate(self, q, published=None):
        return _combined_outcome([s.evaluate(q) for s in self.steps], False, self.describe())

    def describe(self, published=None):
        return f"{' → '.join(self.series)} {self.direction.replace('_', ' ')}" + \
            (f" (steps within {self.tol:g})" if self.tol else "")

    def verdicts(self):
        return {_combine(c, False) for c in itertools.product(*[s.verdicts() for s in self.steps])}


RULES = {r.kind: r for r in (ValueRule, RangeRule, ThresholdRule, OrderingRule, EquivalenceRule, TrendRule, AllOfRule)}


def parse_rule(spec: Mapping[str, Any]) -> Rule:
    """Build a rule from its declaration (a mapping with ``kind``)."""
    if not isinstance(spec, Mapping) or "kind" not in spec:
        raise ValueError(f"a rule is a mapping with a 'kind' (one of {sorted(RULES)}), got {spec!r}")
    kind = spec["kind"]
    if kind not in RULES:
        raise ValueError(f"unknown rule kind {kind!r}; the rules are {sorted(RULES)}")
    return RULES[kind](spec)
