"""Calibrated spline analysis of your own pooled nested case-control data.

The method of Wu, Gail, Smith-Warner, Ziegler and Wang (arXiv:1911.09254; Cancers 2022) as a
tool: a data frame in, a table of coefficients with sandwich standard errors and a calibrated
exposure–risk curve with pointwise confidence intervals out::

    from compendium.stats.pooling import PooledSplineModel

    model = PooledSplineModel(df, study="cohort", set="matchid", case="case",
                              local="vitd_local", reference="vitd_ref", covariates="age + C(sex)")
    res = model.fit(method="full", knots=4)
    res.summary()                    # coefficients, sandwich SEs, z, p, 95 % CIs
    res.curve(grid, ref=50)          # log RR (and RR) against ref, with pointwise CIs
    res.plot(ref=50); res.calibration  # the curve; each study's calibration line

Data, one row per person:

``study``
    any labels. ``set``: the matched set; sets are identified by ``(study, set)``, so ids that
    restart in each study (the usual export) are fine. ``case``: 1 case, 0 control. Sets may have
    any number of controls (variable matching ratios) and more than one case (tied cases: the
    exact conditional likelihood, R ``clogit``'s default — see :mod:`compendium.stats.clogit`).
``local``
    the local-laboratory measurement ``W``; may be missing in reference studies.
``reference``
    the reference-laboratory measurement ``X``, NaN where not measured. In a non-reference
    study the people with both ``W`` and ``X`` form its *calibration subset*.
``reference_studies``
    the studies whose every measurement is a reference-laboratory one (``X`` for everyone;
    local values, if any, are not used). By default, the studies where everyone has ``X``.
``covariates``
    outcome-model confounders (column names or a patsy right-hand side such as
    ``"age + C(sex)"``), entered linearly next to the spline terms.
``calibration_covariates``
    covariates of the calibration model: in each non-reference study
    ``X = a_k + b_k W + c_kᵀ V + e`` by least squares on its subset (the paper's model has none).

Methods: ``naive`` pools local values as if they were reference values; ``internalized`` uses
``X`` where measured and the calibrated value elsewhere; ``full`` the calibrated value for
everyone in non-reference studies. The outcome model is a conditional logistic regression on a
restricted cubic spline of the exposure (knots at Harrell's default quantiles of the method's
exposure for an integer ``knots``, or at the values given; then fixed), plus the covariates. Its
variance is the stacked sandwich over the calibration and outcome estimating equations with the
matched set as the independent unit (:func:`compendium.stats.calibration.fit_pooled`), so the
calibration's uncertainty reaches the curve; for naive, the robust sandwich of the outcome model.

Every malformed input raises :class:`~compendium.stats.clogit.DesignError` (a ``ValueError``)
naming the column and the studies involved; separation raises a
:class:`~compendium.stats.clogit.SeparationWarning` and the separated coefficients are reported
as not estimable.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from compendium.stats.calibration import METHODS, PooledArrays, PooledFit, fit_pooled
from compendium.stats.clogit import DesignError, SeparationWarning
from compendium.stats.splines import HARRELL_QUANTILES, quantile_knots, rcs_basis

__all__ = ["PooledSplineModel", "PooledSplineResults", "DesignError", "SeparationWarning", "DataWarning"]

TIES = "exact conditional likelihood (every subset of the set's size-d members; R clogit's default, method='exact')"


class DataWarning(UserWarning):
    """Something in the data the analysis works around (dropped rows or sets, unused values)."""


def _quote(values: Sequence) -> str:
    vals = list(values)
    shown = ", ".join(f"'{v}'" for v in vals[:8])
    return shown + (f" and {len(vals) - 8} more" if len(vals) > 8 else "")


def _formula_columns(formula: str, columns: Sequence[str]) -> list[str]:
    return [c for c in columns if re.search(r"(?<![\w.])" + re.escape(str(c)) + r"(?![\w.])", formula)]


class PooledSplineModel:
    """A pooled nested case-control data set ready for :meth:`fit` (see the module docstring).

    Parameters name the columns of ``data``. ``missing``: ``"raise"`` (default) stops on a
    missing value in a column the model needs, naming it; ``"drop"`` drops those rows with a
    :class:`DataWarning` that counts them per column."""

    def __init__(self, data: pd.DataFrame, *, study: str, set: str, case: str, local: str, reference: str,
                 covariates: str | Sequence[str] | None = None,
                 calibration_covariates: str | Sequence[str] | None = None,
                 reference_studies: Sequence | None = None, missing: str = "raise"):
        if not isinstance(data, pd.DataFrame):
            raise TypeError(f"data must be a pandas DataFrame, got {type(data).__name__}")
        if missing not in ("raise", "drop"):
            raise ValueError(f"missing must be 'raise' or 'drop', got {missing!r}")
        self.columns = dict(study=study, set=set, case=case, local=local, reference=reference)
        for role, col in self.columns.items():
            if col not in data.columns:
                raise DesignError(f"column '{col}' (given as {role}=) is not in the data; its columns are "
                                  f"{_quote(data.columns)}")
        self.notes: list[str] = []
        df = data.reset_index(drop=True).copy()
        self._covariate_spec, self._calcov_spec = covariates, calibration_covariates
        cov_cols = self._spec_columns(covariates, df, "covariates")
        cal_cols = self._spec_columns(calibration_covariates, df, "calibration_covariates")

        # --- studies, and which of them are reference-laboratory studies
        for role in ("study", "set", "case"):
            self._check_missing(df, [self.columns[role]], None, missing, role)
            df = self._df
        st, X, W = df[study], pd.to_numeric(df[reference], errors="coerce"), pd.to_numeric(df[local], errors="coerce")
        for col, raw, num in ((reference, df[reference], X), (local, df[local], W)):
            bad = raw.notna() & num.isna()
            if bad.any():
                raise DesignError(f"column '{col}' has {int(bad.sum())} non-numeric values (e.g. {raw[bad].iloc[0]!r})")
        self.studies = list(pd.unique(st))
        has_x = X.notna().groupby(st, sort=False).all()
        if reference_studies is None:
            ref = [k for k in self.studies if has_x[k]]
        else:
            ref = list(reference_studies)
            unknown = [k for k in ref if k not in self.studies]
            if unknown:
                raise DesignError(f"reference_studies {_quote(unknown)} are not values of '{study}' "
                                  f"(its studies: {_quote(self.studies)})")
            incomplete = [k for k in ref if not has_x[k]]
            if incomplete:
                counts = X.isna().groupby(st, sort=False).sum()
                raise DesignError("reference studies must have a reference measurement for everyone, but "
                                  + ", ".join(f"'{k}' has {int(counts[k])} rows without '{reference}'" for k in incomplete)
                                  + f"; fill them, drop those rows, or do not list {'it' if len(incomplete) == 1 else 'them'}"
                                  " in reference_studies")
        self.reference_studies = ref
        is_ref = st.isin(ref).to_numpy()
        with_local = [k for k in ref if W[st == k].notna().any()]
        if with_local:
            self.notes.append(f"reference-laboratory {'study' if len(with_local) == 1 else 'studies'} "
                              f"{_quote(with_local)} also {'has' if len(with_local) == 1 else 'have'} local "
                              f"measurements ('{local}'): not used (their '{reference}' values are)")
            if reference_studies is None:
                self.notes[-1] += ("; they were taken as reference studies because everyone in them has a reference "
                                   "measurement — pass reference_studies=[...] to calibrate them instead")

        # --- missing values in the columns each row needs
        self._df = df
        self._check_missing(df, [local], ~is_ref, missing, "local", studies_col=study)
        df = self._df
        st, is_ref = df[study], df[study].isin(ref).to_numpy()
        if cal_cols:
            self._check_missing(df, cal_cols, ~is_ref, missing, "calibration_covariates", studies_col=study)
            df = self._df
        if cov_cols:
            self._check_missing(df, cov_cols, None, missing, "covariates", studies_col=study)
            df = self._df
        st, is_ref = df[study], df[study].isin(ref).to_numpy()
        X = pd.to_numeric(df[reference], errors="coerce").to_numpy(float)
        W = pd.to_numeric(df[local], errors="coerce").to_numpy(float)

        case_raw = df[case]
        ok = case_raw.isin([0, 1, True, False])
        if not ok.all():
            raise DesignError(f"column '{case}' (case=) must be 1 for a case and 0 for a control; found "
                              f"{_quote(pd.unique(case_raw[~ok])[:5])}")
        self._case = case_raw.astype(int).to_numpy()

        # --- design matrices of the covariates
        self.covariate_names, Zc = self._design(covariates, df, "covariates")
        df_cal = df
        if cal_cols and is_ref.any() and (~is_ref).any():  # not used in reference studies: fill any gaps there
            df_cal = df.copy()
            for c in cal_cols:
                df_cal.loc[is_ref, c] = df[c][~is_ref].iloc[0]
        self.calibration_covariate_names, V = self._design(calibration_covariates, df_cal, "calibration_covariates")
        V = np.where(is_ref[:, None], 0.0, V) if V.size else V

        # --- calibration subsets
        H = np.where(is_ref, 2, np.where(~np.isnan(X), 1, 0))
        self._H = H
        need = 3 + V.shape[1]
        self.subset_sizes = {k: int(np.sum((st == k).to_numpy() & (H == 1))) for k in self.studies if k not in ref}
        self._no_subset = [k for k, n in self.subset_sizes.items() if n < need]
        self._need = need
        cases_in_subset = {k: int(np.sum((st == k).to_numpy() & (H == 1) & (self._case == 1))) for k in self.subset_sizes}
        with_cases = {k: n for k, n in cases_in_subset.items() if n}
        if with_cases:
            self.notes.append("calibration subsets usually hold controls only (the paper's design); "
                              + ", ".join(f"study '{k}' has {n} case{'s' if n > 1 else ''} with '{reference}'"
                                          for k, n in with_cases.items())
                              + ": they enter the calibration fit (and keep their measured value under 'internalized')")
        for k in self.subset_sizes:
            if k in self._no_subset:
                continue
            rows = np.flatnonzero((st == k).to_numpy() & (H == 1))
            D = np.column_stack([np.ones(len(rows)), W[rows], V[rows]])
            if np.linalg.matrix_rank(D) < D.shape[1]:
                what = (f"'{local}' takes a single value" if np.ptp(W[rows]) == 0 else
                        f"'{local}' and the calibration covariates {_quote(self.calibration_covariate_names)} are collinear")
                raise DesignError(f"study '{k}': the calibration line cannot be fitted on its {len(rows)}-person "
                                  f"calibration subset ({what} there)")

        # --- matched sets, identified by (study, set)
        unit = df.groupby([study, set], sort=False).ngroup().to_numpy()
        codes = {k: i for i, k in enumerate(self.studies)}
        self._data = PooledArrays.build(st.map(codes).to_numpy(), [k in ref for k in self.studies], W,
                                        X, H, self._case, unit, V, Zc, self.covariate_names)
        sets = self._data.sets
        if len(sets.dropped):
            dropped = np.isin(unit, sets.dropped)
            grp = pd.DataFrame({"s": st[dropped], "u": unit[dropped], "c": self._case[dropped]})
            per = grp.groupby("u").agg(s=("s", "first"), c=("c", "sum"), n=("c", "size"))
            no_case = per[per.c == 0].groupby("s").size()
            no_ctrl = per[per.c == per.n].groupby("s").size()
            parts = []
            if len(no_case):
                parts.append(f"{int(no_case.sum())} without a case (" + ", ".join(f"'{k}': {n}" for k, n in no_case.items()) + ")")
            if len(no_ctrl):
                parts.append(f"{int(no_ctrl.sum())} without a control (" + ", ".join(f"'{k}': {n}" for k, n in no_ctrl.items()) + ")")
            msg = (f"{len(sets.dropped)} matched sets carry no information on the exposure effect and are left out "
                   f"of the outcome model: {'; '.join(parts)}. Sets are identified by ('{study}', '{set}'); "
                   "their reference measurements still enter the calibration")
            if len(sets.dropped) > 0.5 * (len(sets.dropped) + sets.n_sets):
                msg += f" — more than half of all sets: are '{set}' and '{case}' the right columns?"
            warnings.warn(msg, DataWarning, stacklevel=2)
            self.notes.append(msg)
        if sets.n_sets == 0:
            raise DesignError(f"no matched set (by '{study}' and '{set}') has both a case and a control")
        self.n_ties = int(np.sum(sets.n_case > 1))
        if self.n_ties:
            per = pd.Series([self.studies[int(self._data.study[sets.rows[s, 0]])] for s in np.flatnonzero(sets.n_case > 1)])
            self.notes.append(f"{self.n_ties} matched sets have more than one case ("
                              + ", ".join(f"'{k}': {n}" for k, n in per.value_counts(sort=False).items())
                              + f"); tied cases use the {TIES}")
        self.data = df

    # ------------------------------------------------------------------------------------
    def _spec_columns(self, spec, df: pd.DataFrame, role: str) -> list[str]:
        if spec is None:
            return []
        if isinstance(spec, str):
            cols = _formula_columns(spec, [str(c) for c in df.columns])
            if not cols:
                raise DesignError(f"{role}={spec!r} names no column of the data (columns: {_quote(df.columns)})")
            return cols
        cols = list(spec)
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise DesignError(f"{role} {_quote(missing)} {'is' if len(missing) == 1 else 'are'} not in the data; "
                              f"its columns are {_quote(df.columns)}")
        return cols

    def _check_missing(self, df: pd.DataFrame, cols: list[str], rows: np.ndarray | None, missing: str, role: str,
                       studies_col: str | None = None) -> None:
        mask = np.ones(len(df), bool) if rows is None else np.asarray(rows, bool)
        bad_any = np.zeros(len(df), bool)
        parts = []
        for c in cols:
            col = df[c]
            bad = col.isna().to_numpy() & mask
            if col.dtype.kind in "fc":
                bad |= ~np.isfinite(col.to_numpy(float)) & mask
            if bad.any():
                where = ""
                if studies_col is not None:
                    per = df.loc[bad, studies_col].value_counts(sort=False)
                    where = " in studies " + ", ".join(f"'{k}' ({n})" for k, n in per.items())
                parts.append(f"'{c}' ({role}=) has {int(bad.sum())} missing values{where}")
                bad_any |= bad
        if parts:
            if missing == "raise":
                extra = " (reference studies may leave it empty)" if role == "local" else ""
                raise DesignError("; ".join(parts) + f"{extra}. Drop or impute those rows, or pass missing='drop'")
            msg = "; ".join(parts) + f": {int(bad_any.sum())} rows dropped (missing='drop')"
            warnings.warn(msg, DataWarning, stacklevel=3)
            self.notes.append(msg)
            df = df.loc[~bad_any].reset_index(drop=True)
        self._df = df

    def _design(self, spec, df: pd.DataFrame, role: str) -> tuple[tuple[str, ...], np.ndarray]:
        if spec is None:
            return (), np.zeros((len(df), 0))
        if isinstance(spec, str):
            import patsy

            try:
                dm = patsy.dmatrix(spec, df, return_type="dataframe", NA_action="raise")
            except patsy.PatsyError as err:
                raise DesignError(f"{role}={spec!r}: {err}") from None
            dm = dm.drop(columns=[c for c in dm.columns if c == "Intercept"])
            return tuple(str(c) for c in dm.columns), dm.to_numpy(float)
        out = []
        for c in spec:
            v = pd.to_numeric(df[c], errors="coerce")
            if v.isna().any():
                raise DesignError(f"{role} column '{c}' is not numeric (e.g. {df[c][v.isna()].iloc[0]!r}); "
                                  f"pass a formula such as {role}=\"C({c})\" for a categorical variable")
            out.append(v.to_numpy(float))
        return tuple(str(c) for c in spec), np.column_stack(out)

    # ------------------------------------------------------------------------------------
    def fit(self, method: str = "full", knots: int | Sequence[float] = 4, *,
            knot_quantiles: Sequence[float] | None = None, engine: str = "newton") -> "PooledSplineResults":
        """Fit one method. ``knots``: a number (3-7; Harrell's default quantiles of the method's
        exposure) or the knot values; ``knot_quantiles``: probabilities instead (as in the
        authors' R code). Returns :class:`PooledSplineResults`."""
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if method != "naive" and self._no_subset:
            raise DesignError(
                f"method '{method}' calibrates every non-reference study, but "
                + ", ".join(f"'{k}' has {self.subset_sizes[k]}" for k in self._no_subset)
                + f" {'person' if len(self._no_subset) == 1 and self.subset_sizes[self._no_subset[0]] == 1 else 'people'} "
                f"with both '{self.columns['local']}' and '{self.columns['reference']}' (a calibration subset needs at least "
                f"{self._need}); add calibration data, drop {'that study' if len(self._no_subset) == 1 else 'those studies'}, "
                "or use method='naive'")
        data = self._data
        from compendium.stats.calibration import calibration_lines, pooled_exposure

        x = pooled_exposure(data, method, calibration_lines(data) if method != "naive" else {})
        used = x[data.sets.rows[data.sets.mask]]
        if knot_quantiles is not None:
            kn = quantile_knots(used, tuple(knot_quantiles))
        elif np.ndim(knots) == 0:
            if int(knots) not in HARRELL_QUANTILES:
                raise ValueError(f"knots={knots}: give 3 to 7 knots, or the knot values")
            kn = quantile_knots(used, int(knots))
        else:
            kn = np.asarray(knots, float)
            if kn.ndim != 1 or len(kn) < 3 or np.any(np.diff(kn) <= 0):
                raise ValueError(f"knots must be at least 3 strictly increasing values, got {list(knots)}")
            inside = np.sum((used > kn[0]) & (used < kn[-1]))
            if inside < len(kn):
                raise DesignError(f"only {inside} exposure values lie between the outer knots {kn[0]:g} and {kn[-1]:g} "
                                  f"(the exposure ranges over {used.min():.4g}..{used.max():.4g})")
        names = [f"spline_{j + 1}" for j in range(len(kn) - 1)] + list(self.covariate_names)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SeparationWarning)
            try:
                f = fit_pooled(data, method, kn, engine=engine, names=names)
            except DesignError as err:
                msg = str(err)
                if "spline_" in msg:
                    msg += (f" [spline_j are the restricted-cubic-spline terms of the {method} exposure, knots "
                            f"{', '.join(f'{v:.4g}' for v in kn)}]")
                raise DesignError(msg) from None
        for w in caught:
            warnings.warn(w.message, w.category, stacklevel=2)
        return PooledSplineResults(self, f, method, kn, names)


class PooledSplineResults:
    """A fitted :class:`PooledSplineModel`: ``params``, ``bse`` (sandwich), ``bse_model``,
    :meth:`cov_params`, :meth:`conf_int`, :meth:`summary`, :meth:`curve`, :meth:`plot`,
    ``calibration`` (per study), :meth:`report`, :meth:`save`."""

    def __init__(self, model: PooledSplineModel, fit: PooledFit, method: str, knots: np.ndarray, names: list[str]):
        self.model, self.fit_, self.method, self.knots = model, fit, method, np.asarray(knots, float)
        self.names = names
        self.n_spline = len(knots) - 1
        self.params = pd.Series(fit.params, index=names, name="coef")
        V = fit.cov_sandwich if fit.cov_sandwich is not None else np.full((len(names), len(names)), np.nan)
        self._cov = pd.DataFrame(V, index=names, columns=names)
        self.bse = pd.Series(np.sqrt(np.diag(V)), index=names, name="std err")
        self.bse_model = pd.Series(np.sqrt(np.diag(fit.cov_model)), index=names, name="std err (model)")
        self.estimable = pd.Series(fit.estimable, index=names)
        sets = model._data.sets
        self.n_sets = sets.n_sets
        self.n_cases = int(sets.n_case.sum())
        self.nobs = int(sets.mask.sum())
        self.notes = list(model.notes) + list(fit.notes)
        self.ties = TIES
        self.exposure = pd.Series(fit.exposure, index=model.data.index, name=f"exposure ({method})")

    def cov_params(self) -> pd.DataFrame:
        """Sandwich covariance of the coefficients (spline terms, then covariates)."""
        return self._cov.copy()

    def conf_int(self, alpha: float = 0.05) -> pd.DataFrame:
        q = _norm_ppf(1 - alpha / 2)
        return pd.DataFrame({f"[{alpha / 2:g}": self.params - q * self.bse, f"{1 - alpha / 2:g}]": self.params + q * self.bse})

    def summary(self, alpha: float = 0.05) -> pd.DataFrame:
        """Coefficients, sandwich standard errors, z, two-sided p, confidence limits, and the
        model-based standard error for contrast; a ``note`` marks coefficients not estimable."""
        z = self.params / self.bse
        p = pd.Series([math.erfc(abs(v) / math.sqrt(2)) if np.isfinite(v) else np.nan for v in z], index=self.names)
        ci = self.conf_int(alpha)
        out = pd.DataFrame({"coef": self.params, "std err": self.bse, "z": z, "P>|z|": p,
                            ci.columns[0]: ci.iloc[:, 0], ci.columns[1]: ci.iloc[:, 1],
                            "std err (model)": self.bse_model})
        out.index.name = "term"
        out["note"] = ["" if e else "not estimable (separation)" for e in self.estimable]
        return out

    @property
    def calibration(self) -> pd.DataFrame:
        """One row per study: its role, calibration-subset size, the fitted line ``a, b`` (and
        covariate coefficients) with sandwich standard errors, and the residual SD. A reference
        study's biomarker is already on the reference assay: it has no line, and its ``a``, ``b``,
        standard errors and residual SD are NaN. The standard errors are NaN too where the
        stacked covariance could not be formed (``cov_full`` is None)."""
        m, f, d = self.model, self.fit_, self.model._data
        cov_names = list(m.calibration_covariate_names)
        cols = ["a", "b"] + cov_names
        rows = []
        p = int(np.sum(f.estimable))
        offset = p
        for i, k in enumerate(m.studies):
            row = {"study": k, "role": "reference" if k in m.reference_studies else "calibrated",
                   "people": int(np.sum(d.study == i)), "subset": m.subset_sizes.get(k, 0)}
            g = f.gamma.get(i)
            if g is not None:
                se = np.sqrt(np.diag(f.cov_full[offset:offset + len(g), offset:offset + len(g)])) if f.cov_full is not None else np.full(len(g), np.nan)
                offset += len(g)
                rs = np.flatnonzero((d.study == i) & (d.H == 1))
                resid = d.X[rs] - d.design(rs) @ g
                for c, v, s in zip(cols, g, se):
                    row[c], row[f"se {c}"] = float(v), float(s)
                row["resid sd"] = float(np.sqrt(resid @ resid / max(len(rs) - len(g), 1)))
            rows.append(row)
        return pd.DataFrame(rows).set_index("study")

    def _default_grid(self, n: int = 101) -> np.ndarray:
        lo, hi = np.quantile(self.fit_.exposure[self.model._data.sets.rows[self.model._data.sets.mask]], [0.01, 0.99])
        return np.linspace(lo, hi, n)

    def curve(self, grid: Sequence[float] | None = None, ref: float | None = None, level: float = 0.95) -> pd.DataFrame:
        """Log relative risk ``f(x) - f(ref)`` on ``grid`` with its sandwich standard error (delta
        method, full covariance of the spline terms) and pointwise ``level`` intervals, also as RR.
        Defaults: 101 points from the 1st to the 99th percentile of the exposure; ``ref`` the median."""
        if not self.estimable.iloc[: self.n_spline].all():
            bad = [n for n, e in self.estimable.iloc[: self.n_spline].items() if not e]
            raise DesignError(f"the exposure curve is not estimable: spline terms {_quote(bad)} are separated (see the warning)")
        grid = self._default_grid() if grid is None else np.asarray(grid, float).ravel()
        if ref is None:
            ref = float(np.median(self.fit_.exposure[self.model._data.sets.rows[self.model._data.sets.mask]]))
        C = rcs_basis(grid, self.knots) - rcs_basis([ref], self.knots)
        b = self.params.to_numpy()[: self.n_spline]
        V = self._cov.to_numpy()[: self.n_spline, : self.n_spline]
        est = C @ b
        se = np.sqrt(np.einsum("gp,pq,gq->g", C, V, C))
        q = _norm_ppf(0.5 + level / 2)
        lo, hi = est - q * se, est + q * se
        return pd.DataFrame({"exposure": grid, "log_rr": est, "se": se, "lower": lo, "upper": hi,
                             "rr": np.exp(est), "rr_lower": np.exp(lo), "rr_upper": np.exp(hi)}).assign(ref=ref)

    def plot(self, grid: Sequence[float] | None = None, ref: float | None = None, ax=None, rr: bool = True,
             level: float = 0.95, label: str | None = None, rug: bool = True):
        """The curve with its pointwise band (RR on a log axis, or log RR), knots marked; returns the axes."""
        import matplotlib.pyplot as plt

        c = self.curve(grid, ref, level)
        if ax is None:
            _, ax = plt.subplots(figsize=(7, 3.8))
        y, lo, hi = (c.rr, c.rr_lower, c.rr_upper) if rr else (c.log_rr, c.lower, c.upper)
        line, = ax.plot(c.exposure, y, label=label or self.method)
        ax.fill_between(c.exposure, lo, hi, alpha=0.2, color=line.get_color())
        ax.axhline(1.0 if rr else 0.0, color="k", lw=0.6)
        if rr:
            from matplotlib.ticker import FuncFormatter

            ax.set_yscale("log")
            label_125 = FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "125" else "")
            ax.yaxis.set_major_formatter(label_125)
            ax.yaxis.set_minor_formatter(label_125)
        for k in self.knots:
            ax.axvline(k, color="0.7", lw=0.6, ls=":")
        if rug:
            ex = self.fit_.exposure[self.model._data.sets.rows[self.model._data.sets.mask]]
            ex = ex[(ex >= c.exposure.min()) & (ex <= c.exposure.max())]
            ax.plot(ex, np.full(len(ex), 0.0), "|", color="0.5", ms=4, transform=ax.get_xaxis_transform())
        ax.set(xlabel=f"{self.model.columns['reference']} (reference-laboratory scale)",
               ylabel=("RR" if rr else "log RR") + f" vs {c.ref.iloc[0]:.4g} ({level:.0%} CI)")
        return ax

    def report(self) -> str:
        """A short plain-text report: data, method, knots, tie likelihood, notes, tables."""
        m = self.model
        lines = [f"Calibrated spline analysis of pooled nested case-control data ({self.method} calibration)",
                 f"  {len(m.studies)} studies ({len(m.reference_studies)} reference-laboratory: "
                 f"{_quote(m.reference_studies) or 'none'}); {self.n_sets} informative matched sets, "
                 f"{self.n_cases} cases, {self.nobs} people in the outcome model",
                 f"  knots: {', '.join(f'{k:.4g}' for k in self.knots)} (restricted cubic spline, "
                 f"{self.n_spline} terms; cubic terms divided by (t_K - t_1)^2 = {(self.knots[-1] - self.knots[0]) ** 2:.4g})",
                 f"  covariates: {', '.join(m.covariate_names) or 'none'}; calibration covariates: "
                 f"{', '.join(m.calibration_covariate_names) or 'none'}",
                 f"  tied cases: {self.ties}",
                 "  standard errors: stacked sandwich (calibration and outcome equations, matched set as the unit)"
                 if self.method != "naive" else "  standard errors: robust sandwich of the conditional logit (matched set as the unit)"]
        if self.notes:
            lines += ["", "Notes:"] + [f"  - {n}" for n in self.notes]
        with pd.option_context("display.width", 160, "display.max_columns", 20):
            lines += ["", "Coefficients:", self.summary().to_string(float_format=lambda v: f"{v:.4g}"),
                      "", "Calibration (per study):", self.calibration.to_string(float_format=lambda v: f"{v:.4g}")]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()

    def save(self, out: str | Path, grid: Sequence[float] | None = None, ref: float | None = None) -> dict[str, Path]:
        """Write ``summary.csv``, ``calibration.csv``, ``curve.csv``, ``curve.png`` and ``report.txt`` to ``out``."""
        import matplotlib

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {k: out / v for k, v in (("summary", "summary.csv"), ("calibration", "calibration.csv"),
                                         ("curve", "curve.csv"), ("plot", "curve.png"), ("report", "report.txt"))}
        self.summary().to_csv(paths["summary"])
        self.calibration.to_csv(paths["calibration"])
        text = self.report()
        try:
            curve = self.curve(grid, ref)
        except DesignError as err:
            text += f"\n\nNo curve: {err}"
            paths.pop("curve"); paths.pop("plot")
        else:
            curve.to_csv(paths["curve"], index=False)
            with matplotlib.rc_context({"backend": "Agg"}):
                import matplotlib.pyplot as plt

                fig, ax = plt.subplots(figsize=(7, 3.8))
                self.plot(grid, ref, ax=ax)
                ax.set_title(f"{self.method} calibration, {self.n_sets} matched sets")
                fig.tight_layout()
                fig.savefig(paths["plot"], dpi=120)
                plt.close(fig)
            text += f"\n\nCurve: {paths['curve'].name} (log RR and RR vs {curve.ref.iloc[0]:.4g} with 95 % pointwise CIs)"
        paths["report"].write_text(text + "\n")
        return paths


def _norm_ppf(p: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(p))
