"""Splines, conditional logit and the calibration estimators against independent references."""

import itertools
from dataclasses import replace

import numpy as np
import pytest

from compendium.stats.calibration import (METHODS, Design, average_abs_relative_bias, calibration_fits, exposure,
                                          fit, replicate_table, simulate, simulation_quantities, simulation_study,
                                          summarise)
from compendium.stats.clogit import ConvergenceError, as_sets, fit_clogit, loglike
from compendium.stats.splines import quantile_knots, rcs_basis


def test_spline_basis_equals_its_formula_by_hand():
    t = np.array([1.0, 2.0, 4.0, 7.0])
    x = 5.0
    # f2 (j=1): (x-1)^3 - (x-4)^3 (7-1)/(7-4) + 0;  f3 (j=2): (x-2)^3 - (x-4)^3 (7-2)/(7-4)
    f2 = 4 ** 3 - 1 * 6 / 3
    f3 = 3 ** 3 - 1 * 5 / 3
    np.testing.assert_allclose(rcs_basis([x], t, scale=False)[0], [5.0, f2, f3])
    np.testing.assert_allclose(rcs_basis([x], t)[0], [5.0, f2 / 36, f3 / 36])


def test_spline_is_linear_beyond_the_boundary_knots_and_smooth_inside():
    t = np.array([10.0, 30.0, 50.0, 70.0, 90.0])
    for xs in (np.linspace(90, 150, 7), np.linspace(-40, 10, 6)):
        second = np.diff(rcs_basis(xs, t), 2, axis=0)
        np.testing.assert_allclose(second, 0, atol=1e-9)
    # continuous second derivative at an inner knot
    h = 1e-3
    d2 = lambda x: (rcs_basis([x + h], t) - 2 * rcs_basis([x], t) + rcs_basis([x - h], t)) / h ** 2
    np.testing.assert_allclose(d2(30 - 1e-2), d2(30 + 1e-2), atol=1e-3)
    with pytest.raises(ValueError):
        rcs_basis([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        quantile_knots(np.ones(10))


def brute_force_loglike(beta, z, case, groups):
    """Conditional likelihood by enumerating every subset of each set with as many members as it has cases."""
    total = 0.0
    for g in np.unique(groups):
        rows = np.nonzero(groups == g)[0]
        k = int(case[rows].sum())
        num = np.exp(z[rows][case[rows] == 1] @ beta).prod()
        den = sum(np.exp(z[list(sub)] @ beta).prod() for sub in itertools.combinations(rows, k))
        total += np.log(num / den)
    return total


def test_conditional_likelihood_against_brute_force():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(6), 4)
    z = rng.normal(size=(24, 2))
    beta = np.array([0.7, -0.4])
    one_case = np.zeros(24, int)
    one_case[np.arange(6) * 4 + rng.integers(0, 4, 6)] = 1
    Z, c, _ = as_sets(z, one_case, groups)
    assert loglike(beta, Z, c) == pytest.approx(brute_force_loglike(beta, z, one_case, groups))
    # statsmodels' recursion handles two cases per set: check it against enumeration too
    from statsmodels.discrete.conditional_models import ConditionalLogit

    two_cases = one_case.copy()
    two_cases[np.arange(6) * 4 + (np.argmax(one_case.reshape(6, 4), 1) + 1) % 4] = 1
    sm = ConditionalLogit(two_cases.astype(float), z, groups=groups)
    assert sm.loglike(beta) == pytest.approx(brute_force_loglike(beta, z, two_cases, groups))
    with pytest.raises(ValueError, match="exactly one case"):
        as_sets(z, two_cases, groups)


def _design(**kw):
    return replace(Design(), **kw)


def test_newton_engine_equals_statsmodels_and_converges():
    df = simulate(_design(n_sets=(150, 150, 150, 150), n_cal=(0, 30, 30, 30)), np.random.default_rng(3))
    z = rcs_basis(df.W.to_numpy(), np.array(Design().knots))
    a = fit_clogit(z, df.case.to_numpy(), df.set.to_numpy(), engine="statsmodels")
    b = fit_clogit(z, df.case.to_numpy(), df.set.to_numpy(), engine="newton")
    np.testing.assert_allclose(a.params, b.params, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(a.cov_model, b.cov_model, rtol=1e-5)
    with pytest.raises(ConvergenceError, match="did not converge"):
        fit_clogit(z * 5, df.case.to_numpy(), df.set.to_numpy(), engine="newton", maxiter=1)
    with pytest.raises(ValueError):
        fit_clogit(z, df.case.to_numpy(), df.set.to_numpy(), engine="sas")


def test_calibration_recovers_the_laboratory_lines():
    # with no exposure effect the controls are a random sample, so the lines are recovered exactly
    # (with an effect, calibrating on controls carries a small selection bias, as in the paper's design)
    d = _design(n_sets=(100, 2000, 2000, 2000), n_cal=(0, 1500, 1500, 1500), beta=(0.0, 0.0, 0.0))
    cal = calibration_fits(simulate(d, np.random.default_rng(0)))
    for k in (1, 2, 3):
        assert cal[k][0] == pytest.approx(d.a[k], abs=1.5) and cal[k][1] == pytest.approx(d.b[k], abs=0.03)


def test_exposures_follow_their_definitions():
    df = simulate(_design(n_sets=(20, 20, 20, 20), n_cal=(0, 5, 5, 5)), np.random.default_rng(1))
    cal = calibration_fits(df)
    ref, sub, rest = df.H == 2, df.H == 1, df.H == 0
    naive, internal, full = (exposure(df, m, cal) for m in ("naive", "internalized", "full"))
    a = df.study.map(lambda k: cal.get(k, (0, 1))[0]); b = df.study.map(lambda k: cal.get(k, (0, 1))[1])
    np.testing.assert_allclose(naive[rest], df.W[rest])
    np.testing.assert_allclose(internal[sub], df.X[sub])
    np.testing.assert_allclose(full[sub], (a + b * df.W)[sub])
    for e in (naive, internal, full):
        np.testing.assert_allclose(e[ref], df.X[ref])
    with pytest.raises(ValueError):
        exposure(df, "magic", cal)


def test_full_calibration_recovers_the_true_curve_on_a_large_sample():
    d = _design(n_sets=(3000, 3000, 3000, 3000), n_cal=(0, 400, 400, 400))
    f = fit(simulate(d, np.random.default_rng(7)), "full", np.array(d.knots))
    se = np.sqrt(np.diag(f.cov_sandwich))
    assert np.all(np.abs(f.beta - np.array(d.beta)) < 3 * se)
    naive = fit(simulate(d, np.random.default_rng(7)), "naive", np.array(d.knots))
    grid = np.linspace(30, 90, 13)
    err = lambda g: np.abs(g.curve(grid, 50.0)[0] - d.log_rr(grid, 50.0)).max()
    assert err(f) < err(naive)  # the uncalibrated pool is distorted by the laboratories


def test_sandwich_agrees_with_a_bootstrap():
    d = _design(n_sets=(120, 120, 120, 120), n_cal=(0, 15, 15, 15))
    df = simulate(d, np.random.default_rng(11))
    knots = np.array(d.knots)
    est = fit(df, "full", knots)
    rng = np.random.default_rng(0)
    sets_by_study = {k: sub.set.unique() for k, sub in df.groupby("study")}
    by_set = {s: g for s, g in df.groupby("set")}
    boots = []
    for _ in range(150):  # resample matched sets within each study, renumbering the copies
        parts, new_id = [], 0
        for k, sets in sets_by_study.items():
            for s in rng.choice(sets, len(sets), replace=True):
                g = by_set[s].copy()
                g["set"] = new_id
                new_id += 1
                parts.append(g)
        import pandas as pd

        boots.append(fit(pd.concat(parts, ignore_index=True), "full", knots, sandwich=False).beta)
    boot_se = np.std(np.stack(boots), axis=0, ddof=1)
    sandwich_se = np.sqrt(np.diag(est.cov_sandwich))
    np.testing.assert_allclose(sandwich_se, boot_se, rtol=0.25)


def test_replicate_quantities_agree_with_the_summary_and_carry_intervals():
    d = _design(n_sets=(60, 60, 60, 60), n_cal=(0, 15, 15, 15))
    sim = simulation_study(d, 8, seed=3)
    table = replicate_table(sim, d)
    assert len(table) == 8 * len(METHODS) and list(table.method.unique()) == list(METHODS)
    assert all((table[table.method == m].seed.to_numpy() == sorted(set(sim.seed))).all() for m in METHODS)
    # relative error per replicate, by hand for one row
    row, raw = table.iloc[0], sim[(sim.method == table.method[0]) & (sim.seed == table.seed[0])].iloc[0]
    assert row.rel_bias_0 == pytest.approx((raw.beta[0] - d.beta[0]) / abs(d.beta[0]))
    summary = summarise(sim, d)
    qs = {q.name: q for q in simulation_quantities(table, "s")}
    for m in METHODS:
        bias, cover, gap = qs[f"bias_s_{m}"], qs[f"cover_s_{m}"], qs[f"covgap_s_{m}"]
        assert bias.estimate == pytest.approx(summary.loc[m, "avg |relative bias| of coefficients"])
        assert cover.estimate == pytest.approx(summary.loc[m, "coverage, curve"])
        assert bias.method == "bootstrap" and cover.method == "wilson" and bias.n == cover.n == 8
        assert bias.low <= bias.estimate <= bias.high and bias.high > bias.low
        assert gap.estimate == pytest.approx(abs(cover.estimate - 0.95))
        assert gap.low == (0.0 if cover.low <= 0.95 <= cover.high else min(abs(cover.low - 0.95), abs(cover.high - 0.95)))
        assert gap.high == pytest.approx(max(abs(cover.low - 0.95), abs(cover.high - 0.95)))
    assert average_abs_relative_bias([[0.1, -0.3], [0.3, -0.1]]) == pytest.approx(0.2)
