"""Each comparison rule on every branch, with hand-made quantities (including inconclusive)."""

import math

import pytest

from compendium.book.quantities import Quantity, difference
from compendium.book.rules import (INCONCLUSIVE, NOT_REPRODUCED, PARTLY, REPRODUCED, Zone, parse_rule)

R, P, NR, I = REPRODUCED, PARTLY, NOT_REPRODUCED, INCONCLUSIVE


def one(name, v):
    return Quantity.single(name, v)


def iv(name, est, lo, hi, n=10):
    return Quantity.given(name, est, lo, hi, n)


# --- quantities --------------------------------------------------------------------------------

def test_t_interval_matches_the_formula():
    q = Quantity.from_samples("a", [1.0, 2.0, 3.0, 4.0])
    half = 3.182446305284263 * math.sqrt(1.6666666666666667) / 2  # t_{0.975,3} * s / sqrt(4)
    assert q.estimate == 2.5 and q.n == 4 and q.method == "t"
    assert q.low == pytest.approx(2.5 - half) and q.high == pytest.approx(2.5 + half)
    assert Quantity.from_samples("b", [0.7]).method == "1 run"


def test_wilson_interval_known_values():
    q = Quantity.rate("r", 81, 263)  # Wilson (1927)-style check against a hand computation
    p, n, z = 81 / 263, 263, 1.959963984540054
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert q.low == pytest.approx(centre - half) and q.high == pytest.approx(centre + half)
    assert Quantity.rate("r", 0, 20).low == 0 and Quantity.rate("r", 20, 20).high == 1
    with pytest.raises(ValueError):
        Quantity.rate("r", 5, 3)


def test_bootstrap_interval_contains_the_median_and_is_reproducible():
    x = [0.1 * i for i in range(50)]
    a, b = Quantity.bootstrap("m", x), Quantity.bootstrap("m", x)
    assert a == b and a.low < a.estimate < a.high and a.method == "bootstrap"


def test_quantity_rejects_non_finite_and_inverted_values():
    with pytest.raises(ValueError, match="finite"):
        Quantity.single("x", float("nan"))
    with pytest.raises(ValueError, match="outside"):
        Quantity.given("x", 5, 0, 1, 3)
    with pytest.raises(ValueError, match="finite"):
        Quantity.from_samples("x", [1.0, float("inf")])


def test_difference_paired_and_mover():
    a = Quantity.from_samples("a", [0.90, 0.92, 0.91])
    b = Quantity.from_samples("b", [0.88, 0.90, 0.89])
    d = difference(a, b, paired=True)
    assert d.method == "paired t" and d.estimate == pytest.approx(0.02) and d.high - d.low < 1e-9 + 1e-12 + 1e-6
    m = difference(a, b)
    assert m.method == "mover" and m.low < 0.02 < m.high
    # MOVER for two Wilson intervals is Newcombe's hybrid score interval
    x, y = Quantity.rate("x", 56, 70), Quantity.rate("y", 48, 80)
    n = difference(x, y)
    assert n.low == pytest.approx(0.2 - math.hypot(x.estimate - x.low, y.high - y.estimate))
    with pytest.raises(ValueError, match="paired"):
        difference(a, Quantity.from_samples("c", [1.0, 2.0]), paired=True)
    assert difference(one("p", 2), one("q", 1)).method == "1 run"


def test_zone_touching_respects_open_ends():
    z = Zone(R, 0.0, 1.0, lo_closed=False)
    assert not z.touches(-1.0, 0.0) and z.touches(-1.0, 0.1) and z.touches(1.0, 2.0)
    assert not Zone(R, 0.0, 1.0, hi_closed=False).touches(1.0, 2.0)


# --- rules ---------------------------------------------------------------------------------

@pytest.mark.parametrize("q, verdict", [
    (one("q", 93.0), R), (one("q", 93.15 - 0.75), P), (one("q", 94.0), P), (one("q", 91.0), NR),
    (iv("q", 93.0, 92.9, 93.1), R), (iv("q", 93.0, 92.0, 93.1), I), (iv("q", 90.0, 89.0, 91.0), NR),
    (iv("q", 92.4, 92.3, 92.6), P),
])
def test_value_rule(q, verdict):
    assert parse_rule({"kind": "value", "quantity": "q", "tolerance": 0.5}).evaluate({"q": q}, 93.15).verdict == verdict


def test_value_rule_factor_converts_fractions_to_percent():
    r = parse_rule({"kind": "value", "quantity": "q", "tolerance": 0.5, "factor": 100})
    assert r.evaluate({"q": one("q", 0.930)}, 93.15).verdict == R


@pytest.mark.parametrize("q, verdict", [
    (one("q", 7.0), R), (one("q", 11.0), P), (one("q", 5.0), P), (one("q", 20.0), NR), (one("q", 5.74), R),
    (iv("q", 7.0, 5.0, 8.0), I), (iv("q", 13.0, 12.9, 13.5), NR),
])
def test_range_rule(q, verdict):
    assert parse_rule({"kind": "range", "quantity": "q"}).evaluate({"q": q}, [5.74, 10.20]).verdict == verdict


@pytest.mark.parametrize("spec, q, verdict", [
    ({"above": 0.5}, one("q", 0.6), R), ({"above": 0.5}, one("q", 0.5), NR), ({"at_least": 0.5}, one("q", 0.5), R),
    ({"below": 0.5}, one("q", 0.4), R), ({"below": 0.5}, one("q", 0.5), NR), ({"at_most": 0.5}, one("q", 0.5), R),
    ({"above": 0.5, "partly": 0.3}, one("q", 0.4), P), ({"above": 0.5, "partly": 0.3}, one("q", 0.2), NR),
    ({"below": 0.5, "partly": 1.0}, one("q", 0.7), P), ({"below": 0.5, "partly": 1.0}, one("q", 1.2), NR),
    ({"above": 0.5}, iv("q", 0.55, 0.45, 0.65), I), ({"above": 0.5, "partly": 0.3}, iv("q", 0.4, 0.35, 0.45), P),
    ({"above": 0.5, "partly": 0.3}, iv("q", 0.4, 0.25, 0.45), I),
])
def test_threshold_rule(spec, q, verdict):
    assert parse_rule({"kind": "threshold", "quantity": "q", **spec}).evaluate({"q": q}).verdict == verdict


def test_threshold_rule_rejects_bad_declarations():
    with pytest.raises(ValueError, match="exactly one"):
        parse_rule({"kind": "threshold", "quantity": "q", "above": 1, "below": 2})
    with pytest.raises(ValueError, match="weaker"):
        parse_rule({"kind": "threshold", "quantity": "q", "above": 1, "partly": 2})


@pytest.mark.parametrize("spec, a, b, verdict", [
    ({}, one("a", 0.9), one("b", 0.8), R), ({}, one("a", 0.8), one("b", 0.8), NR),
    ({"direction": "lower"}, one("a", 0.1), one("b", 0.2), R), ({"direction": "lower"}, one("a", 0.3), one("b", 0.2), NR),
    ({"margin": -0.02}, one("a", 0.79), one("b", 0.80), R), ({"margin": 0.05}, one("a", 0.84), one("b", 0.80), NR),
    ({"margin": 0.05, "partly_margin": 0.0}, one("a", 0.84), one("b", 0.80), P),
    ({}, Quantity.rate("a", 944, 1000), Quantity.rate("b", 944, 1000), I),
    ({}, Quantity.rate("a", 980, 1000), Quantity.rate("b", 900, 1000), R),
    ({"paired": True}, Quantity.from_samples("a", [0.91, 0.92, 0.93]), Quantity.from_samples("b", [0.90, 0.915, 0.92]), R),
    ({}, Quantity.from_samples("a", [0.91, 0.92, 0.93]), Quantity.from_samples("b", [0.90, 0.915, 0.92]), I),
])
def test_ordering_rule(spec, a, b, verdict):
    r = parse_rule({"kind": "ordering", "better": "a", "worse": "b", **spec})
    assert r.evaluate({"a": a, "b": b}).verdict == verdict


@pytest.mark.parametrize("spec, a, b, verdict", [
    ({"delta": 0.02}, one("a", 0.81), one("b", 0.80), R), ({"delta": 0.02}, one("a", 0.75), one("b", 0.80), NR),
    ({"delta": 0.02, "partly_delta": 0.04}, one("a", 0.77), one("b", 0.80), P),
    ({"delta": 0.02, "partly_delta": 0.04}, one("a", 0.83), one("b", 0.80), P),
    ({"delta": 0.02}, Quantity.rate("a", 80, 100), Quantity.rate("b", 81, 100), I),
])
def test_equivalence_rule(spec, a, b, verdict):
    r = parse_rule({"kind": "equivalence", "a": "a", "b": "b", **spec})
    assert r.evaluate({"a": a, "b": b}).verdict == verdict


@pytest.mark.parametrize("direction, tol, values, verdict", [
    ("not_decreasing", 0.01, [0.90, 0.905, 0.91], R), ("not_decreasing", 0.01, [0.90, 0.85, 0.91], NR),
    ("not_decreasing", 0.01, [0.90, 0.895, 0.91], R), ("increasing", 0.0, [0.90, 0.90, 0.91], NR),
    ("decreasing", 0.0, [3.0, 2.0, 1.0], R), ("not_increasing", 0.0, [3.0, 2.0, 2.5], NR),
])
def test_trend_rule(direction, tol, values, verdict):
    names = [f"q{i}" for i in range(len(values))]
    r = parse_rule({"kind": "trend", "series": names, "direction": direction, "tolerance": tol})
    assert r.evaluate({n: one(n, v) for n, v in zip(names, values)}).verdict == verdict


def test_trend_rule_inconclusive_with_wide_intervals():
    r = parse_rule({"kind": "trend", "series": ["a", "b"], "direction": "not_decreasing", "tolerance": 0.01})
    assert r.evaluate({"a": iv("a", 0.9, 0.85, 0.95), "b": iv("b", 0.9, 0.85, 0.95)}).verdict == I


def _two(partial):
    return parse_rule({"kind": "all_of", "partial": partial, "parts": [
        {"kind": "threshold", "quantity": "a", "above": 0.5}, {"kind": "threshold", "quantity": "b", "above": 0.5}]})


@pytest.mark.parametrize("partial, a, b, verdict", [
    (True, one("a", 0.6), one("b", 0.6), R), (True, one("a", 0.6), one("b", 0.4), P), (True, one("a", 0.4), one("b", 0.4), NR),
    (False, one("a", 0.6), one("b", 0.4), NR), (False, one("a", 0.6), one("b", 0.6), R),
    # an undecided part decides nothing when either outcome changes the whole ...
    (True, one("a", 0.6), iv("b", 0.5, 0.4, 0.6), I),
    # ... but not when the whole is settled anyway: one part already failed and partial credit is off
    (False, one("a", 0.4), iv("b", 0.5, 0.4, 0.6), NR),
    # with partial credit, one held and the other undecided: reproduced or partly → inconclusive
    (True, iv("a", 0.5, 0.4, 0.6), one("b", 0.4), I),
])
def test_all_of_rule(partial, a, b, verdict):
    assert _two(partial).evaluate({"a": a, "b": b}).verdict == verdict


def test_all_of_with_a_partly_part_and_no_partial_credit_is_partly():
    r = parse_rule({"kind": "all_of", "parts": [
        {"kind": "threshold", "quantity": "a", "above": 0.5, "partly": 0.3},
        {"kind": "threshold", "quantity": "b", "above": 0.5}]})
    assert r.evaluate({"a": one("a", 0.4), "b": one("b", 0.6)}).verdict == P
    assert r.verdicts() == {R, P, NR}


def test_rule_declarations_fail_loudly():
    with pytest.raises(ValueError, match="unknown rule kind"):
        parse_rule({"kind": "check"})
    with pytest.raises(ValueError, match="needs 'better'"):
        parse_rule({"kind": "ordering", "worse": "b"})
    with pytest.raises(ValueError, match="direction"):
        parse_rule({"kind": "trend", "series": ["a", "b"], "direction": "sideways"})
    with pytest.raises(ValueError, match="partly_delta"):
        parse_rule({"kind": "equivalence", "a": "a", "b": "b", "delta": 0.1, "partly_delta": 0.05})


def test_rules_list_the_quantities_they_read():
    r = parse_rule({"kind": "all_of", "parts": [{"kind": "ordering", "better": "x", "worse": "y"},
                                                {"kind": "value", "quantity": "z", "tolerance": 1}]})
    assert r.quantities() == ["x", "y", "z"]
