"""Spline analysis of biomarker data pooled from nested case-control studies with
study-specific calibration (Wu, Gail, Smith-Warner, Ziegler, Wang; arXiv:1911.09254).

Data (one row per person): ``study``, matched ``set`` (unique across studies), ``case``,
``W`` (local-laboratory measurement, everyone), ``X`` (reference-laboratory value, observed
when ``H`` > 0), ``H`` = 0 not in a calibration subset, 1 in the calibration subset (controls
only), 2 a reference-laboratory study (X for everyone).

Per non-reference study ``k``, calibration by least squares on its subset, ``X = a_k + b_k W``.
Exposures for the outcome model:

- ``naive``: ``W`` in non-reference studies (pooled as if it were ``X``), ``X`` in reference ones;
- ``internalized``: ``X`` where measured (H = 1, 2), ``â_k + b̂_k W`` elsewhere;
- ``full``: ``X`` only in reference studies, ``â_k + b̂_k W`` for everyone else, subset included.

Outcome model: conditional logistic regression of the case indicator on a restricted cubic
spline of the exposure, matched sets as strata. Variance: a sandwich ``B⁻¹ A B⁻ᵀ`` over the
stacked estimating equations — each study's two calibration equations and each matched set's
conditional score — with the matched set as the independent unit (calibration subjects are
controls inside sets), so calibration uncertainty reaches the spline coefficients. ``B`` is
the Jacobian of the summed equations: ``-I(β)`` and ``-Σ DᵀD`` analytically, the score's
derivative in the calibration parameters by central differences (:func:`fit_pooled`).

The engine (:class:`PooledArrays`, :func:`fit_pooled`) is general: matched sets of any size with
any number of cases (exact conditional likelihood), covariates in the outcome model and in the
calibration model (``X = a_k + b_k W + c_kᵀ V``). :func:`fit` runs it on the simulator's frame;
:mod:`compendium.stats.pooling` on a user's data frame, with checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from compendium import smoke
from compendium.book.quantities import Quantity
from compendium.stats.clogit import MatchedSets, cond_information, cond_scores, fit_clogit
from compendium.stats.splines import rcs_basis

METHODS = ("naive", "internalized", "full")


@dataclass(frozen=True)
class Design:
    """A pooled nested case-control design (all values ours; the paper's design is not transcribed)."""

    n_sets: tuple[int, ...] = (300, 300, 300, 300)  # matched sets per study
    reference: tuple[bool, ...] = (True, False, False, False)  # reference-laboratory studies
    n_cal: tuple[int, ...] = (0, 50, 50, 50)  # calibration-subset size per study (controls)
    controls_per_case: int = 1
    x_mean: tuple[float, ...] = (60.0, 55.0, 65.0, 60.0)  # true exposure mean per study (nmol/L-like)
    x_sd: float = 20.0
    a: tuple[float, ...] = (0.0, 10.0, -8.0, 5.0)  # local lab: X = a + b W + e   (reference: a=0, b=1)
    b: tuple[float, ...] = (1.0, 0.8, 1.25, 0.9)
    error_sd: float = 8.0  # sd of X given W within a study
    knots: tuple[float, ...] = (30.0, 50.0, 70.0, 90.0)  # fixed knots of the true curve and of the fits
    beta: tuple[float, ...] = (-0.03, 0.03, 0.0)  # true log-RR spline coefficients (scaled basis)

    def validate(self) -> None:
        n = len(self.n_sets)
        for name in ("reference", "n_cal", "x_mean", "a", "b"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"design.{name} must have one entry per study ({n})")
        if len(self.beta) != len(self.knots) - 1:
            raise ValueError("beta needs one coefficient per spline term (len(knots) - 1)")
        for k, (ref, m) in enumerate(zip(self.reference, self.n_cal)):
            if not ref and m < 3:
                raise ValueError(f"study {k}: a calibration subset needs at least 3 controls")
            if m > self.n_sets[k] * self.controls_per_case:
                raise ValueError(f"study {k}: calibration subset larger than its controls")

    def log_rr(self, x: np.ndarray, x_ref: float) -> np.ndarray:
        """True log relative risk at ``x`` against ``x_ref``."""
        return (rcs_basis(x, np.array(self.knots)) - rcs_basis([x_ref], np.array(self.knots))) @ np.array(self.beta)


def simulate(design: Design, rng: np.random.Generator) -> pd.DataFrame:
    """One pooled data set. Within each set, the case is drawn from ``M + 1`` candidates with
    probability proportional to ``exp(f(X))`` — the conditional model holds exactly — and the
    local measurement is generated so that ``X | W`` follows the study's calibration line."""
    design.validate()
    rows, set_id = [], 0
    M = design.controls_per_case + 1
    kn, beta = np.array(design.knots), np.array(design.beta)
    for k, n in enumerate(design.n_sets):
        # W first, then X | W on the calibration line: regression calibration is then exact
        mean_w = (design.x_mean[k] - design.a[k]) / design.b[k]
        sd_w = np.sqrt(max(design.x_sd ** 2 - design.error_sd ** 2, 1.0)) / design.b[k]
        W = rng.normal(mean_w, sd_w, (n, M))
        X = design.a[k] + design.b[k] * W + rng.normal(0, design.error_sd, (n, M))
        eta = (rcs_basis(X, kn) @ beta).reshape(n, M)
        p = np.exp(eta - eta.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        case_pos = (rng.random((n, 1)) > np.cumsum(p, 1)).sum(1)
        case = np.zeros((n, M), int)
        case[np.arange(n), case_pos] = 1
        H = np.full((n, M), 2 if design.reference[k] else 0)
        if not design.reference[k]:
            controls = np.argwhere(case == 0)
            pick = controls[rng.choice(len(controls), design.n_cal[k], replace=False)]
            H[pick[:, 0], pick[:, 1]] = 1
        for s in range(n):
            for j in range(M):
                rows.append((k, set_id + s, case[s, j], W[s, j], X[s, j] if H[s, j] > 0 else np.nan, H[s, j]))
        set_id += n
    return pd.DataFrame(rows, columns=["study", "set", "case", "W", "X", "H"])


def calibration_fits(df: pd.DataFrame) -> dict[int, tuple[float, float]]:
    """``{study: (a_k, b_k)}`` by least squares on each non-reference study's subset."""
    out = {}
    for k, sub in df[df.H == 1].groupby("study"):
        A = np.column_stack([np.ones(len(sub)), sub.W.to_numpy()])
        out[int(k)] = tuple(np.linalg.lstsq(A, sub.X.to_numpy(), rcond=None)[0])
    return out


def exposure(df: pd.DataFrame, method: str, calib: dict[int, tuple[float, float]]) -> np.ndarray:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    x = df.W.to_numpy(float).copy()
    ref = df.H.to_numpy() == 2
    x[ref] = df.X.to_numpy()[ref]
    if method == "naive":
        return x
    a = df.study.map(lambda k: calib.get(int(k), (0.0, 1.0))[0]).to_numpy(float)
    b = df.study.map(lambda k: calib.get(int(k), (0.0, 1.0))[1]).to_numpy(float)
    calibrated = a + b * df.W.to_numpy(float)
    x[~ref] = calibrated[~ref]
    if method == "internalized":
        measured = df.H.to_numpy() == 1
        x[measured] = df.X.to_numpy()[measured]
    return x


@dataclass
class SplineFit:
    method: str
    beta: np.ndarray
    cov_model: np.ndarray
    cov_sandwich: np.ndarray | None
    knots: np.ndarray
    calib: dict[int, tuple[float, float]] = field(default_factory=dict)

    def curve(self, grid: np.ndarray, x_ref: float, robust: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Estimated log RR at ``grid`` against ``x_ref`` and its standard error (delta method)."""
        C = rcs_basis(grid, self.knots) - rcs_basis([x_ref], self.knots)
        V = self.cov_sandwich if (robust and self.cov_sandwich is not None) else self.cov_model
        return C @ self.beta, np.sqrt(np.einsum("gp,pq,gq->g", C, V, C))


@dataclass
class PooledArrays:
    """A pooled nested case-control data set as arrays (one row per person); what
    :func:`fit_pooled` works on. :class:`compendium.stats.pooling.PooledSplineModel` builds it from a
    data frame with checks and messages; :func:`fit` from the simulator's frame.

    ``study``: codes ``0..K-1``; ``reference[k]``: study ``k`` measured everyone in the reference
    laboratory; ``W`` local and ``X`` reference measurements (NaN where not measured);
    ``H``: 2 in reference studies, 1 for the calibration subset (``X`` and ``W`` measured), 0 otherwise;
    ``V`` ``[n, r]`` calibration-model covariates; ``Zc`` ``[n, q]`` outcome-model covariates;
    ``unit``: group codes ``0..G-1`` of the matched sets, the independent units of the sandwich;
    ``sets`` the informative sets (ids are unit codes)."""

    study: np.ndarray
    reference: np.ndarray
    W: np.ndarray
    X: np.ndarray
    H: np.ndarray
    case: np.ndarray
    unit: np.ndarray
    V: np.ndarray
    Zc: np.ndarray
    sets: MatchedSets
    covariate_names: tuple[str, ...] = ()

    @classmethod
    def build(cls, study, reference, W, X, H, case, unit, V=None, Zc=None, covariate_names=()) -> "PooledArrays":
        n = len(study)
        V = np.zeros((n, 0)) if V is None else np.asarray(V, float).reshape(n, -1)
        Zc = np.zeros((n, 0)) if Zc is None else np.asarray(Zc, float).reshape(n, -1)
        unit = np.asarray(unit)
        return cls(np.asarray(study), np.asarray(reference, bool), np.asarray(W, float), np.asarray(X, float),
                   np.asarray(H), np.asarray(case), unit, V, Zc, MatchedSets.from_groups(np.asarray(case), unit),
                   tuple(covariate_names))

    def design(self, rows: np.ndarray) -> np.ndarray:
        """Calibration-model design ``(1, W, V)`` at ``rows``."""
        return np.column_stack([np.ones(len(rows)), self.W[rows], self.V[rows]])

    @property
    def calibrated_studies(self) -> list[int]:
        return [k for k in range(len(self.reference)) if not self.reference[k]]


def calibration_lines(data: PooledArrays) -> dict[int, np.ndarray]:
    """``{study: γ_k}``: least squares of ``X`` on ``(1, W, V)`` in each non-reference study's subset."""
    out = {}
    for k in data.calibrated_studies:
        rows = np.flatnonzero((data.study == k) & (data.H == 1))
        out[k] = np.linalg.lstsq(data.design(rows), data.X[rows], rcond=None)[0]
    return out


def pooled_exposure(data: PooledArrays, method: str, gamma: dict[int, np.ndarray]) -> np.ndarray:
    """The exposure each method gives every row (see the module docstring)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    ref = data.H == 2
    x = np.where(ref, data.X, data.W)
    if method == "naive":
        return x
    for k, g in gamma.items():
        rows = np.flatnonzero(data.study == k)
        x[rows] = data.design(rows) @ g
    if method == "internalized":
        measured = data.H == 1
        x[measured] = data.X[measured]
    return x


@dataclass
class PooledFit:
    """What :func:`fit_pooled` returns. ``params``/``cov_*`` cover the spline terms then the outcome
    covariates (NaN where not estimable); ``gamma`` the calibration lines; ``cov_full`` the sandwich
    of every stacked parameter in the order of ``names``."""

    method: str
    knots: np.ndarray
    params: np.ndarray
    cov_model: np.ndarray
    cov_sandwich: np.ndarray | None
    gamma: dict[int, np.ndarray]
    names: list[str]
    cov_full: np.ndarray | None
    exposure: np.ndarray
    estimable: np.ndarray
    notes: list[str]
    n_spline: int


def fit_pooled(data: PooledArrays, method: str, knots: np.ndarray, sandwich: bool = True, engine: str = "newton",
               robust_naive: bool = True, names: list[str] | None = None) -> PooledFit:
    """Calibrate (unless naive), fit the spline conditional logit (exact likelihood for tied cases)
    and compute the stacked sandwich covariance with the matched set as the independent unit.

    Stacked parameters ``θ = (β, γ_k for each non-reference study)``; per unit ``u`` the estimating
    functions are its set's conditional score ``U_u(β; γ)`` and, for each study, ``Σ (X_i - D_iγ_k) D_i``
    over its calibration subjects in ``u`` (``D = (1, W, V)``). ``V = B⁻¹ A B⁻ᵀ`` with
    ``A = Σ_u ψ_u ψ_uᵀ``; ``B``'s blocks are ``-I(β)`` (the conditional information), ``∂U/∂γ`` (central
    differences) and ``-Σ DᵢᵀDᵢ``. For naive (no calibration) this is the robust sandwich of the
    conditional logit alone (or, with ``robust_naive=False``, nothing: only the model-based covariance)."""
    knots = np.asarray(knots, float)
    gamma = calibration_lines(data) if method != "naive" else {}
    x = pooled_exposure(data, method, gamma)
    sets = data.sets
    p_s = len(knots) - 1
    z = np.column_stack([rcs_basis(x, knots), data.Zc])
    nm = names or [f"spline_{j + 1}" for j in range(p_s)] + list(data.covariate_names)
    res = fit_clogit(z, data.case, data.unit, engine=engine, names=nm, sets=sets)
    est = res.estimable
    keep = np.ones(sets.n_sets, bool)
    keep[res.dropped_sets] = False
    sub = MatchedSets(sets.ids[keep], sets.rows[keep], sets.case[keep], sets.n_case[keep], sets.n_rows)
    beta = res.params[est]
    p = len(beta)
    studies = sorted(gamma)
    cov_s = cov_full = None
    if sandwich and (method != "naive" or robust_naive) and p > 0:
        G = int(data.unit.max()) + 1
        sizes = [len(gamma[k]) for k in studies]
        P = p + sum(sizes)
        offs = np.cumsum([p] + sizes)[:-1]

        def scores(g: dict[int, np.ndarray]) -> np.ndarray:
            zz = np.column_stack([rcs_basis(pooled_exposure(data, method, g), knots), data.Zc])[:, est]
            return cond_scores(beta, sub.gather(zz), sub)

        psi = np.zeros((G, P))
        psi[sub.ids, :p] = scores(gamma)
        B = np.zeros((P, P))
        zz = np.column_stack([rcs_basis(x, knots), data.Zc])[:, est]
        B[:p, :p] = -cond_information(beta, sub.gather(zz), sub)
        for k, o, d in zip(studies, offs, sizes):
            rows = np.flatnonzero((data.study == k) & (data.H == 1))
            D = data.design(rows)
            r = data.X[rows] - D @ gamma[k]
            np.add.at(psi[:, o:o + d], data.unit[rows], r[:, None] * D)
            B[o:o + d, o:o + d] = -D.T @ D
            for j in range(d):
                h = 1e-5 * max(1.0, abs(gamma[k][j]))
                up, dn = dict(gamma), dict(gamma)
                up[k] = gamma[k].copy(); up[k][j] += h
                dn[k] = gamma[k].copy(); dn[k][j] -= h
                B[:p, o + j] = (scores(up).sum(0) - scores(dn).sum(0)) / (2 * h)
        A = psi.T @ psi
        Binv = np.linalg.inv(B)
        cov_full = Binv @ A @ Binv.T
        cov_s = np.full((len(est), len(est)), np.nan)
        cov_s[np.ix_(est, est)] = cov_full[:p, :p]
    return PooledFit(method, knots, res.params, res.cov_model, cov_s, gamma, nm, cov_full, x, est, res.notes, p_s)


def fit(df: pd.DataFrame, method: str, knots: np.ndarray, sandwich: bool = True, engine: str = "newton") -> SplineFit:
    """The simulator's frame (``study``, ``set`` unique across studies, ``case``, ``W``, ``X``, ``H``):
    calibrate (unless naive), fit the spline conditional logit, and (for the calibrated methods)
    compute the stacked sandwich covariance (:func:`fit_pooled`; naive: model-based only)."""
    study = df.study.to_numpy()
    K = int(study.max()) + 1
    H = df.H.to_numpy()
    reference = np.array([bool(np.all(H[study == k] == 2)) if np.any(study == k) else False for k in range(K)])
    _, unit = np.unique(df.set.to_numpy(), return_inverse=True)
    data = PooledArrays.build(study, reference, df.W.to_numpy(float), df.X.to_numpy(float), H, df.case.to_numpy(), unit)
    f = fit_pooled(data, method, knots, sandwich=sandwich, engine=engine, robust_naive=False)
    calib = {k: (float(g[0]), float(g[1])) for k, g in f.gamma.items()}
    return SplineFit(method, f.params, f.cov_model, f.cov_sandwich, np.asarray(knots, float), calib)


def one_replicate(args: tuple[Design, int, np.ndarray, float]) -> list[dict]:
    """All three methods on one simulated data set: coefficients, their SEs, and the curve."""
    design, seed, grid, x_ref = args
    df = simulate(design, np.random.default_rng(seed))
    knots = np.array(design.knots)
    true_curve = design.log_rr(grid, x_ref)
    out = []
    for m in METHODS:
        f = fit(df, m, knots)
        est, se = f.curve(grid, x_ref)
        se_model = f.curve(grid, x_ref, robust=False)[1]
        beta_se = np.sqrt(np.diag(f.cov_sandwich if f.cov_sandwich is not None else f.cov_model))
        out.append({"seed": seed, "method": m, "beta": f.beta, "beta_se": beta_se,
                    "beta_se_model": np.sqrt(np.diag(f.cov_model)), "curve": est, "curve_se": se,
                    "curve_se_model": se_model, "true_curve": true_curve})
    return out


def simulation_study(design: Design, replicates: int, seed: int = 0, grid: np.ndarray | None = None,
                     x_ref: float = 50.0, workers: int = 1) -> pd.DataFrame:
    """``replicates`` data sets (in parallel over ``workers`` processes); one row per (replicate, method)."""
    grid = np.linspace(25, 95, 15) if grid is None else grid
    replicates = smoke.limit(replicates, smoke.DRAWS)  # smoke mode: a few replicates
    jobs = [(design, seed * 1_000_003 + r, grid, x_ref) for r in range(replicates)]
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(one_replicate, jobs, chunksize=max(1, replicates // (4 * workers))))
    else:
        results = [one_replicate(j) for j in jobs]
    return pd.DataFrame([row for rep in results for row in rep])


def summarise(sim: pd.DataFrame, design: Design) -> pd.DataFrame:
    """Per method: average relative bias of the coefficients, 95 % coverage of the coefficients
    (sandwich where available, and model-based), and of the curve on the grid."""
    beta = np.array(design.beta)
    nonzero = beta != 0
    rows = []
    for m, sub in sim.groupby("method", sort=False):
        B = np.stack(sub.beta.to_numpy())
        SE = np.stack(sub.beta_se.to_numpy())
        SEm = np.stack(sub.beta_se_model.to_numpy())
        C, CS, CSm = (np.stack(sub[c].to_numpy()) for c in ("curve", "curve_se", "curve_se_model"))
        truth = np.stack(sub.true_curve.to_numpy())
        rel_bias = (B.mean(0)[nonzero] - beta[nonzero]) / np.abs(beta[nonzero])
        cover = lambda est, se, tru: float(np.mean(np.abs(est - tru) <= 1.96 * se))
        rows.append({"method": m, "replicates": len(sub),
                     "avg |relative bias| of coefficients": float(np.mean(np.abs(rel_bias))),
                     "coverage, coefficients": cover(B, SE, beta), "coverage, coefficients (model SE)": cover(B, SEm, beta),
                     "avg |bias| of log RR curve": float(np.mean(np.abs(C.mean(0) - truth[0]))),
                     "coverage, curve": cover(C, CS, truth), "coverage, curve (model SE)": cover(C, CSm, truth)})
    return pd.DataFrame(rows).set_index("method")


def replicate_table(sim: pd.DataFrame, design: Design, level: float = 1.96) -> pd.DataFrame:
    """Per-replicate results of a simulation study: one row per (replicate, method).

    Columns: ``seed``, ``method``; ``rel_bias_<j>`` the relative error
    ``(β̂_j − β_j)/|β_j|`` of each non-zero true coefficient ``j`` (its mean over replicates is the
    relative bias); ``covered_<j>`` whether that coefficient's 95 % interval (sandwich for the
    calibrated methods) covers the truth (0/1); ``curve_covered`` and ``curve_covered_model`` the
    fraction of the grid points at which the log-RR curve's pointwise 95 % interval (sandwich,
    model-based) covers the true curve. Rows are ordered by method, then seed, so that every
    method lists the same replicates in the same order."""
    beta = np.array(design.beta)
    rows = []
    for r in sim.itertuples(index=False):
        row = {"seed": int(r.seed), "method": r.method}
        for j in np.flatnonzero(beta):
            row[f"rel_bias_{j}"] = float((r.beta[j] - beta[j]) / abs(beta[j]))
        for j in range(len(beta)):
            row[f"covered_{j}"] = int(abs(r.beta[j] - beta[j]) <= level * r.beta_se[j])
        row["curve_covered"] = float(np.mean(np.abs(r.curve - r.true_curve) <= level * r.curve_se))
        row["curve_covered_model"] = float(np.mean(np.abs(r.curve - r.true_curve) <= level * r.curve_se_model))
        rows.append(row)
    order = {m: i for i, m in enumerate(METHODS)}
    out = pd.DataFrame(rows)
    return out.sort_values(["method", "seed"], key=lambda c: c.map(order) if c.name == "method" else c,
                           ignore_index=True)


def average_abs_relative_bias(rel_bias: np.ndarray) -> float:
    """``mean_j |mean_i r_ij|``: the relative bias of each coefficient (mean over replicates ``i``
    of its relative error), in absolute value, averaged over the coefficients ``j``."""
    r = np.asarray(rel_bias, float)
    return float(np.mean(np.abs(r.mean(axis=0))))


def simulation_quantities(table: pd.DataFrame, scenario: str, target: float = 0.95, resamples: int = 2000,
                          seed: int = 0) -> list[Quantity]:
    """The simulation study's quantities for one scenario, from :func:`replicate_table`, with 95 % intervals.

    For each method ``m``:

    ``bias_<scenario>_<m>``
        average |relative bias| of the non-zero coefficients (:func:`average_abs_relative_bias`),
        with a percentile bootstrap over replicates (``resamples`` resamples, fixed ``seed``): the
        statistic is an absolute value of a mean, so no t-interval applies.
    ``cover_<scenario>_<m>``
        coverage of the log-RR curve: the mean over replicates of the fraction of grid points
        covered, as a rate over replicates (Wilson, n = replicates). Each replicate counts as
        one trial with its covered fraction as success; a [0, 1] variable with mean p has variance
        at most p(1 − p), so this interval is conservative (grid points of one replicate are not
        independent trials).
    ``covgap_<scenario>_<m>``
        ``|coverage − target|``, with the image of the coverage interval under ``|x − target|``
        (its lower end is 0 when the coverage interval contains the target).
    """
    bias_cols = [c for c in table.columns if c.startswith("rel_bias_")]
    out = []
    rng = np.random.default_rng(seed)
    n_rep = table.groupby("method").size()
    if n_rep.nunique() != 1:
        raise ValueError(f"every method needs the same replicates, got {n_rep.to_dict()}")
    n = int(n_rep.iloc[0])
    idx = rng.integers(0, n, size=(resamples, n)) if n > 1 else None
    for m in METHODS:
        sub = table[table.method == m]
        if sub.empty:
            continue
        R = sub[bias_cols].to_numpy(float)
        est = average_abs_relative_bias(R)
        if idx is None:
            bias = Quantity.single(f"bias_{scenario}_{m}", est)
        else:
            boots = np.array([average_abs_relative_bias(R[i]) for i in idx])
            lo, hi = (float(v) for v in np.percentile(boots, [2.5, 97.5]))
            bias = Quantity(f"bias_{scenario}_{m}", est, min(lo, est), max(hi, est), n, "bootstrap")
        cover = Quantity.rate(f"cover_{scenario}_{m}", float(sub.curve_covered.sum()), n)
        gap = abs(cover.estimate - target)
        ends = (abs(cover.low - target), abs(cover.high - target))
        gap_lo = 0.0 if cover.low <= target <= cover.high else min(ends)
        covgap = Quantity(f"covgap_{scenario}_{m}", gap, min(gap_lo, gap), max(max(ends), gap), n, cover.method)
        out += [bias, cover, covgap]
    return out


def vitamin_d_design(n_cohorts: int = 17, n_sets: int = 5700, n_reference: int = 2, seed: int = 0) -> Design:
    """A synthetic pooled 25(OH)D design shaped after the vitamin D - colorectal cancer pooling
    project's size (17 cohorts, about 5,700 cases; McCullough et al., JNCI 2019): one control per
    case (so about 5,700 controls rather than the project's 7,100), ``n_reference`` cohorts
    measured in the reference laboratory, the others with calibration subsets of 20-100 controls
    and assay biases drawn at random. Everything about it is invented: it is not the project's data."""
    rng = np.random.default_rng(seed)
    share = rng.dirichlet(np.full(n_cohorts, 4.0))
    sets = np.maximum(50, np.round(share * n_sets)).astype(int)
    ref = np.arange(n_cohorts) < n_reference
    return Design(n_sets=tuple(int(v) for v in sets), reference=tuple(bool(v) for v in ref),
                  n_cal=tuple(0 if r else int(rng.integers(20, 101)) for r in ref), controls_per_case=1,
                  x_mean=tuple(float(v) for v in rng.normal(60, 8, n_cohorts)), x_sd=22.0,
                  a=tuple(0.0 if r else float(rng.normal(0, 10)) for r in ref),
                  b=tuple(1.0 if r else float(rng.uniform(0.75, 1.3)) for r in ref), error_sd=8.0,
                  knots=(30.0, 50.0, 70.0, 90.0), beta=(-0.03, 0.03, 0.0))
