"""The public pooled-calibration API (compendium.stats.pooling), the general conditional logit
(variable matching ratios, tied cases) and `compendium calibrate`."""

import itertools
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from compendium.stats.calibration import Design, fit, simulate
from compendium.stats.clogit import (DesignError, MatchedSets, SeparationWarning, cond_information, cond_loglike,
                                     cond_scores, fit_clogit)
from compendium.stats.pooling import DataWarning, PooledSplineModel
from compendium.stats.splines import rcs_basis


def brute_force_loglike(beta, z, case, groups):
    """Conditional likelihood by enumerating every subset of each set with as many members as it has cases."""
    total = 0.0
    for g in np.unique(groups):
        rows = np.nonzero(groups == g)[0]
        k = int(case[rows].sum())
        if k == 0 or k == len(rows):
            continue
        num = np.exp(z[rows][case[rows] == 1] @ beta).prod()
        den = sum(np.exp(z[list(sub)] @ beta).prod() for sub in itertools.combinations(rows, k))
        total += np.log(num / den)
    return total


def ragged_sets(rng, n_sets=12, p=2):
    """Sets of 2 to 6 members with 1 to 3 cases (at least one control), rows shuffled."""
    z, case, groups = [], [], []
    for s in range(n_sets):
        m = int(rng.integers(2, 7))
        d = int(rng.integers(1, min(3, m - 1) + 1))
        c = np.zeros(m, int)
        c[rng.choice(m, d, replace=False)] = 1
        z.append(rng.normal(size=(m, p)))
        case.append(c)
        groups.append(np.full(m, 100 + 7 * s))
    z, case, groups = np.concatenate(z), np.concatenate(case), np.concatenate(groups)
    perm = rng.permutation(len(z))
    return z[perm], case[perm], groups[perm]


def test_variable_ratios_and_tied_cases_against_brute_force():
    rng = np.random.default_rng(5)
    z, case, groups = ragged_sets(rng)
    sets = MatchedSets.from_groups(case, groups)
    assert sets.n_case.max() >= 2 and len(set(sets.mask.sum(1).tolist())) > 2
    Z = sets.gather(z)
    beta = np.array([0.6, -0.9])
    f = lambda b: brute_force_loglike(b, z, case, groups)
    assert cond_loglike(beta, Z, sets) == pytest.approx(f(beta), rel=1e-12)
    h = 1e-5
    grad = np.array([(f(beta + h * e) - f(beta - h * e)) / (2 * h) for e in np.eye(2)])
    np.testing.assert_allclose(cond_scores(beta, Z, sets).sum(0), grad, rtol=1e-6)
    hess = np.array([[(f(beta + h * a + h * b) - f(beta + h * a - h * b) - f(beta - h * a + h * b)
                       + f(beta - h * a - h * b)) / (4 * h * h) for b in np.eye(2)] for a in np.eye(2)])
    np.testing.assert_allclose(cond_information(beta, Z, sets), -hess, rtol=1e-4)
    # the maximum: our Newton and statsmodels' ConditionalLogit (its own recursion) agree
    a = fit_clogit(z, case, groups, engine="newton")
    b = fit_clogit(z, case, groups, engine="statsmodels")
    np.testing.assert_allclose(a.params, b.params, rtol=1e-6)
    np.testing.assert_allclose(a.cov_model, b.cov_model, rtol=1e-5)


def test_sets_without_a_case_or_control_are_left_out():
    case = np.array([1, 0, 0, 0, 0, 1, 1, 0, 1, 0])
    groups = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])  # set 1 has no case
    sets = MatchedSets.from_groups(case, groups)
    assert list(sets.ids) == [0, 2, 3, 4] and list(sets.dropped) == [1]
    with pytest.raises(DesignError, match="must be 0 or 1"):
        MatchedSets.from_groups(np.array([0, 2]), np.array([0, 0]))


# ----------------------------------------------------------------------------------------------
# a user's data frame


def user_frame(seed=0, n_sets=60, ratio=3, n_cal=20, ties=True, restart=True):
    """Simulated pooled data in a user's shape: study labels, set ids restarting per study,
    variable matching ratios (1-3 controls), a few tied sets, covariates, no H column, and a
    reference study without local measurements."""
    rng = np.random.default_rng(seed)
    d = replace(Design(), n_sets=(n_sets,) * 4, n_cal=(0, n_cal, n_cal, n_cal), controls_per_case=ratio)
    df = simulate(d, rng)
    drop = []
    for s, g in df.groupby("set"):
        ctrl = g.index[(g.case == 0) & (g.H != 1)]
        drop += list(rng.choice(ctrl, min(int(rng.integers(0, ratio)), len(ctrl)), replace=False))
    df = df.drop(drop).reset_index(drop=True)
    if ties:
        for s, g in df.groupby("set"):
            ctrl = g.index[(g.case == 0) & (g.H == 0)]
            if s % 9 == 0 and len(ctrl) >= 2:
                df.loc[ctrl[0], "case"] = 1
    df["cohort"] = df.study.map({0: "REF", 1: "A", 2: "B", 3: "C"})
    df["matchid"] = df.groupby("study").set.transform(lambda v: pd.factorize(v)[0] + 1) if restart else df.set
    df["age"] = rng.normal(55, 8, len(df))
    df["sex"] = rng.choice(["f", "m"], len(df))
    df.loc[df.study == 0, "W"] = np.nan
    return df.drop(columns=["H", "study", "set"]).rename(columns={"W": "local", "X": "ref"})


COLS = dict(study="cohort", set="matchid", case="case", local="local", reference="ref")


def test_results_match_the_lower_level_functions():
    d = replace(Design(), n_sets=(80,) * 4, n_cal=(0, 20, 20, 20))
    df = simulate(d, np.random.default_rng(2))
    knots = np.array(d.knots)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PooledSplineModel(df, study="study", set="set", case="case", local="W", reference="X")
    grid = np.linspace(30, 90, 7)
    for method in ("internalized", "full"):
        res = model.fit(method, knots=knots)
        low = fit(df, method, knots)
        np.testing.assert_allclose(res.params.to_numpy(), low.beta, rtol=1e-10)
        np.testing.assert_allclose(res.bse.to_numpy(), np.sqrt(np.diag(low.cov_sandwich)), rtol=1e-10)
        est, se = low.curve(grid, 50.0)
        c = res.curve(grid, ref=50.0)
        np.testing.assert_allclose(c.log_rr, est, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(c.se, se, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(c.upper - c.lower, 2 * 1.959963985 * se, rtol=1e-8, atol=1e-14)
        np.testing.assert_allclose(c.rr, np.exp(est))
        table = res.summary()
        np.testing.assert_allclose(table["coef"], low.beta, rtol=1e-10)
        np.testing.assert_allclose(table["std err (model)"], np.sqrt(np.diag(low.cov_model)), rtol=1e-8)
        assert {"z", "P>|z|", "[0.025", "0.975]"} <= set(table.columns)
        cal = res.calibration
        for k, (a, b) in low.calib.items():
            assert cal.loc[k, "a"] == pytest.approx(a) and cal.loc[k, "b"] == pytest.approx(b)


def _numerical_sandwich(res):
    """The stacked sandwich with every block of B by central differences of the per-set estimating
    functions, written independently of fit_pooled (a check of its semi-analytic B)."""
    from compendium.stats.calibration import pooled_exposure

    d, f = res.model._data, res.fit_
    studies = sorted(f.gamma)
    sizes = [len(f.gamma[k]) for k in studies]
    p = len(f.params)
    theta0 = np.concatenate([f.params] + [f.gamma[k] for k in studies])
    sets = d.sets
    G = int(d.unit.max()) + 1

    def psi(theta):
        beta = theta[:p]
        gam, o = {}, p
        for k, s in zip(studies, sizes):
            gam[k] = theta[o:o + s]
            o += s
        x = pooled_exposure(d, res.method, gam)
        z = np.column_stack([rcs_basis(x, res.knots), d.Zc])
        out = np.zeros((G, len(theta)))
        out[sets.ids, :p] = cond_scores(beta, sets.gather(z), sets)
        o = p
        for k, s in zip(studies, sizes):
            rows = np.flatnonzero((d.study == k) & (d.H == 1))
            D = d.design(rows)
            np.add.at(out[:, o:o + s], d.unit[rows], (d.X[rows] - D @ gam[k])[:, None] * D)
            o += s
        return out

    P = psi(theta0)
    B = np.empty((len(theta0), len(theta0)))
    for j in range(len(theta0)):
        h = 1e-6 * max(1.0, abs(theta0[j]))
        e = np.zeros(len(theta0)); e[j] = h
        B[:, j] = (psi(theta0 + e).sum(0) - psi(theta0 - e).sum(0)) / (2 * h)
    Bi = np.linalg.inv(B)
    return (Bi @ (P.T @ P) @ Bi.T)[:p, :p]


def test_ratios_ties_restarting_ids_and_covariates_end_to_end():
    df = user_frame(seed=1)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        model = PooledSplineModel(df, **COLS, covariates="age + C(sex)", calibration_covariates=["age"])
    assert model.reference_studies == ["REF"] and model.n_ties > 0
    assert any("more than one case" in n and "exact conditional likelihood" in n for n in model.notes)
    assert not [r for r in rec if "carry no information" in str(r.message)]
    res = model.fit("full", knots=4)
    assert list(res.params.index) == ["spline_1", "spline_2", "spline_3", "C(sex)[T.m]", "age"]
    np.testing.assert_allclose(res.cov_params().to_numpy(), _numerical_sandwich(res), rtol=2e-4)
    # the same analysis with set ids unique across studies gives the same fit
    df2 = df.copy()
    df2["matchid"] = df2.cohort + "-" + df2.matchid.astype(str)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res2 = PooledSplineModel(df2, **COLS, covariates="age + C(sex)", calibration_covariates=["age"]).fit("full", knots=4)
    np.testing.assert_allclose(res2.params, res.params, rtol=1e-10)
    np.testing.assert_allclose(res2.bse, res.bse, rtol=1e-8)
    # calibration with a covariate: the per-study least-squares coefficients
    cal = res.calibration
    sub = df[(df.cohort == "B") & df.ref.notna()]
    A = np.column_stack([np.ones(len(sub)), sub.local, sub.age])
    np.testing.assert_allclose(cal.loc["B", ["a", "b", "age"]].to_numpy(float), np.linalg.lstsq(A, sub.ref, rcond=None)[0])
    assert cal.loc["REF", "role"] == "reference" and np.isnan(cal.loc["REF", "a"])
    for method in ("naive", "internalized"):
        r = model.fit(method, knots=[30, 50, 70, 90])
        assert np.all(np.isfinite(r.bse)) and r.method == method


def test_set_ids_restarting_per_study_are_distinct_sets():
    df = user_frame(seed=2, ties=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = PooledSplineModel(df, **COLS).fit("full")
    assert res.n_sets == df.groupby(["cohort", "matchid"]).ngroups  # not the 60 distinct ids


def test_separation_is_detected_warned_and_reported_not_estimable():
    df = user_frame(seed=3, ties=False)
    df["marker"] = df.case * 1.0  # cases and controls perfectly separated by a covariate
    for engine in ("newton", "statsmodels"):
        model = PooledSplineModel(df, **COLS, covariates=["age", "marker"])
        with pytest.warns(SeparationWarning, match="'marker'.*not estimable"):
            res = model.fit("full", engine=engine)
        table = res.summary()
        assert np.isnan(table.loc["marker", "coef"]) and "not estimable" in table.loc["marker", "note"]
        assert np.isfinite(table.loc["age", "coef"]) or res.n_sets > 0
    # the exposure itself: every case above every control of its set
    z = np.array([[1.0], [0.0], [2.0], [1.5], [0.3], [-1.0]])
    case, groups = np.array([1, 0, 1, 0, 1, 0]), np.array([0, 0, 1, 1, 2, 2])
    for engine in ("newton", "statsmodels"):
        with pytest.warns(SeparationWarning, match="'x'"):
            r = fit_clogit(z, case, groups, engine=engine, names=["x"])
        assert np.isnan(r.params[0]) and not r.estimable[0]


def test_design_errors_name_their_cause():
    df = user_frame(seed=4, ties=False)
    kw = dict(COLS)
    with pytest.raises(DesignError, match="'vitd'.*reference="):
        PooledSplineModel(df, **{**kw, "reference": "vitd"})
    # a covariate constant within every set (a matching variable)
    df["center"] = df.groupby(["cohort", "matchid"]).ngroup() % 3
    with pytest.raises(DesignError, match="'center'.*constant within every matched set"):
        PooledSplineModel(df, **kw, covariates=["center"]).fit("full")
    # collinear covariates
    df["age_months"] = 12 * df.age + 3
    with pytest.raises(DesignError, match="'age', 'age_months'.*collinear"):
        PooledSplineModel(df, **kw, covariates=["age", "age_months"]).fit("full")
    # a missing covariate value: the column and the study are named, under both engines
    bad = df.copy()
    bad.loc[bad.index[bad.cohort == "B"][:2], "age"] = np.nan
    with pytest.raises(DesignError, match=r"'age' \(covariates=\) has 2 missing values in studies 'B' \(2\)"):
        PooledSplineModel(bad, **kw, covariates="age")
    with pytest.warns(DataWarning, match="2 rows dropped"):
        PooledSplineModel(bad, **kw, covariates="age", missing="drop").fit("full", engine="statsmodels")
    # a missing local value outside the reference study
    bad = df.copy()
    bad.loc[bad.index[bad.cohort == "C"][0], "local"] = np.nan
    with pytest.raises(DesignError, match=r"'local' \(local=\) has 1 missing values in studies 'C'"):
        PooledSplineModel(bad, **kw)
    # studies without a calibration subset
    bad = df.copy()
    bad.loc[bad.cohort.isin(["A", "C"]), "ref"] = np.nan
    model = PooledSplineModel(bad, **kw)
    with pytest.raises(DesignError, match="'A' has 0.*'C' has 0.*calibration subset needs at least 3"):
        model.fit("full")
    assert model.fit("naive").method == "naive"  # naive needs no calibration
    # a study listed as reference without reference measurements for everyone
    with pytest.raises(DesignError, match="'A' has .* rows without 'ref'"):
        PooledSplineModel(df, **kw, reference_studies=["REF", "A"])
    with pytest.raises(DesignError, match="reference_studies 'Z'"):
        PooledSplineModel(df, **kw, reference_studies=["Z"])
    # a case column that is not 0/1
    bad = df.copy()
    bad.loc[0, "case"] = 2
    with pytest.raises(DesignError, match="'case'.*1 for a case and 0 for a control"):
        PooledSplineModel(bad, **kw)
    # knots outside the exposure
    with pytest.raises(DesignError, match="between the outer knots"):
        PooledSplineModel(df, **kw).fit("full", knots=[200, 300, 400])


def test_reference_study_with_or_without_local_measurements():
    df = user_frame(seed=5, ties=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        without = PooledSplineModel(df, **COLS)
    assert not any("also" in n for n in without.notes)
    df2 = df.copy()
    df2.loc[df2.cohort == "REF", "local"] = df2.loc[df2.cohort == "REF", "ref"] + 3.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        withl = PooledSplineModel(df2, **COLS)
    assert any("'REF' also has local measurements" in n for n in withl.notes)
    np.testing.assert_allclose(withl.fit("full").params, without.fit("full").params, rtol=1e-12)


def test_sets_without_case_warn_with_their_studies():
    df = user_frame(seed=6, ties=False)
    cases_a = df.index[(df.cohort == "A") & (df.case == 1)][:3]
    df = df.drop(cases_a)
    with pytest.warns(DataWarning, match=r"3 without a case \('A': 3\).*\('cohort', 'matchid'\)"):
        PooledSplineModel(df, **COLS)


def test_cli_on_a_small_csv(tmp_path):
    from compendium.cli import main

    df = user_frame(seed=7, n_sets=40)
    path = tmp_path / "pooled.csv"
    df.to_csv(path, index=False)
    out = tmp_path / "results"
    rc = main(["calibrate", str(path), "--study", "cohort", "--set", "matchid", "--case", "case", "--local", "local",
               "--reference", "ref", "--covariates", "age + C(sex)", "--method", "full", "--knots", "4",
               "--ref", "50", "--out", str(out)])
    assert rc == 0
    for name in ("summary.csv", "calibration.csv", "curve.csv", "curve.png", "report.txt"):
        assert (out / name).stat().st_size > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = PooledSplineModel(df, **COLS, covariates="age + C(sex)").fit("full", knots=4)
    table = pd.read_csv(out / "summary.csv", index_col=0)
    np.testing.assert_allclose(table["coef"], res.params, rtol=1e-8)
    np.testing.assert_allclose(table["std err"], res.bse, rtol=1e-8)
    curve = pd.read_csv(out / "curve.csv")
    np.testing.assert_allclose(curve.log_rr, res.curve(curve.exposure, ref=50.0).log_rr, rtol=1e-8, atol=1e-12)
    assert "exact conditional likelihood" in (out / "report.txt").read_text()
    # a malformed call names its cause and exits 2
    assert main(["calibrate", str(path), "--study", "cohort", "--set", "matchid", "--case", "case", "--local",
                 "nope", "--reference", "ref", "--out", str(out)]) == 2


def test_low_level_fit_names_missing_and_unidentifiable_columns():
    rng = np.random.default_rng(8)
    z, case, groups = ragged_sets(rng, n_sets=20)
    bad = z.copy()
    bad[3, 1] = np.nan
    for engine in ("newton", "statsmodels"):
        with pytest.raises(DesignError, match=r"'bmi' \(1 rows\)"):
            fit_clogit(bad, case, groups, engine=engine, names=["age", "bmi"])
    const = np.column_stack([z[:, 0], groups * 0.5])  # constant within every set
    with pytest.raises(DesignError, match="'matchvar' is constant within every matched set"):
        fit_clogit(const, case, groups, names=["x", "matchvar"])
    coll = np.column_stack([z[:, 0], z[:, 1], z[:, 0] - 2 * z[:, 1] + groups])
    with pytest.raises(DesignError, match="'a', 'b', 'c' are collinear within matched sets"):
        fit_clogit(coll, case, groups, names=["a", "b", "c"])
