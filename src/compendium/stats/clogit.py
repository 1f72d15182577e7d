"""Conditional logistic regression for matched sets of any size with any number of cases.

Likelihood. For a set ``s`` with rows ``z_j`` (``η_j = z_j·β``) and ``d`` cases ``D``, the
*exact* conditional likelihood — the probability of the observed cases among all ways of
choosing ``d`` members of the set — is

    L_s(β) = exp(Σ_{j∈D} η_j) / Σ_{|S'|=d} exp(Σ_{j∈S'} η_j),

the sum running over every ``d``-subset of the set. With one case it is the familiar
``exp(η_c) / Σ_j exp(η_j)``. This is R ``survival::clogit``'s default (``method = "exact"``),
statsmodels' ``ConditionalLogit`` and what the pooling paper's R code enumerates for its
two-case sets; it is not the Breslow or Efron approximation. The denominator is the ``d``-th
elementary symmetric polynomial of ``exp(η_j)``, computed (with its gradient and Hessian) by
the recursion of Gail, Lubin and Rubinstein (Biometrika 1981),
``E(m, k) = E(m-1, k) + exp(η_m) E(m-1, k-1)``, vectorised over sets; the tests hold it equal
to brute-force enumeration. The score is ``U_s = Σ_{j∈D} z_j - E_β[Σ_{j∈S'} z_j]`` and the
information the covariance of ``Σ_{j∈S'} z_j`` under the conditional distribution.

Sets with no case or no control carry no information and are left out of the fit (as in R).

Checks before and after the fit, each naming the column(s) and the number of sets involved:
non-finite values; a column constant within every set (its effect is absorbed by the
matching) or columns collinear within sets; and *separation* — a direction ``u`` with every
case's ``z·u`` at least every control's of its set, strictly in some, along which the
likelihood increases for ever, so that the maximum-likelihood estimate does not exist. It is
found by a linear programme (maximise ``Σ (z_case - z_control)·u`` subject to each such
difference ``≥ 0`` and ``|u_j| ≤ 1``) whenever the fit shows a symptom (no convergence, a set
predicted with probability above ``1 - 1e-6``, or a near-singular information). The columns
with non-zero ``u_j`` are reported *not estimable* (a :class:`SeparationWarning`), dropped,
and the model refitted without them and without the sets they predict perfectly (Stata's
convention for perfect prediction).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


class ConvergenceError(RuntimeError):
    """The conditional-likelihood fit did not reach a stationary point."""


class SeparationWarning(UserWarning):
    """Cases and controls are perfectly separated along some coefficients: they are not estimable."""


class DesignError(ValueError):
    """The data cannot identify the model (missing values, a column constant within sets, collinearity)."""


# --------------------------------------------------------------------------------------------
# matched-set structure
# --------------------------------------------------------------------------------------------


@dataclass
class MatchedSets:
    """Rows grouped into matched sets, padded to the largest set.

    ``rows[s, m]`` is the index (into the original rows) of member ``m`` of set ``s`` or ``-1``
    for padding; ``case[s, m]`` marks the cases; ``n_case[s]`` counts them. Only *informative*
    sets (at least one case and one control) are kept; ``dropped`` lists the others' ids."""

    ids: np.ndarray
    rows: np.ndarray
    case: np.ndarray
    n_case: np.ndarray
    n_rows: int
    dropped: np.ndarray = field(default_factory=lambda: np.empty(0))

    @property
    def mask(self) -> np.ndarray:
        return self.rows >= 0

    @property
    def n_sets(self) -> int:
        return len(self.ids)

    @classmethod
    def from_groups(cls, case: np.ndarray, groups: np.ndarray) -> "MatchedSets":
        case = np.asarray(case)
        groups = np.asarray(groups)
        if case.shape != groups.shape or case.ndim != 1:
            raise ValueError(f"case and groups must be 1-d of the same length, got {case.shape} and {groups.shape}")
        if not np.all(np.isin(case, (0, 1))):
            bad = sorted(set(np.unique(case[~np.isin(case, (0, 1))]).tolist()))[:5]
            raise DesignError(f"the case indicator must be 0 or 1; found {bad}")
        case = case.astype(bool)
        ids, inv, counts = np.unique(groups, return_inverse=True, return_counts=True)
        order = np.argsort(inv, kind="stable")
        start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        pos = np.arange(len(groups)) - np.repeat(start, counts)
        M = int(counts.max()) if len(counts) else 0
        rows = np.full((len(ids), M), -1)
        rows[inv[order], pos] = order
        C = np.zeros((len(ids), M), bool)
        C[inv[order], pos] = case[order]
        n_case = C.sum(1)
        keep = (n_case > 0) & (n_case < counts)
        rows, C, n_case = rows[keep], C[keep], n_case[keep]
        if len(rows):  # trim padding no kept set needs
            M = int((rows >= 0).sum(1).max())
            rows, C = rows[:, :M], C[:, :M]
        return cls(ids[keep], rows, C, n_case, len(groups), ids[~keep])

    def gather(self, z: np.ndarray) -> np.ndarray:
        """``[S, M, p]`` covariates of the set members (zeros at padding)."""
        z = np.asarray(z, float)
        if z.ndim == 1:
            z = z[:, None]
        Z = z[np.where(self.rows >= 0, self.rows, 0)]
        Z[self.rows < 0] = 0.0
        return Z

    def pairs(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (case, control) difference ``z_case - z_control`` within a set, and its set."""
        s, a = np.nonzero(self.case)
        out, which = [], []
        ctrl = self.mask & ~self.case
        for m in range(self.rows.shape[1]):
            sel = ctrl[s, m]
            out.append(Z[s[sel], a[sel]] - Z[s[sel], m])
            which.append(s[sel])
        if not out:
            return np.zeros((0, Z.shape[2])), np.zeros(0, int)
        return np.concatenate(out), np.concatenate(which)


def _softmax(eta: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    eta = np.where(mask, eta, -np.inf)
    mx = eta.max(1, keepdims=True)
    e = np.exp(eta - mx)
    tot = e.sum(1, keepdims=True)
    return e / tot, (mx + np.log(tot))[:, 0]


def _esp(Z: np.ndarray, eta: np.ndarray, mask: np.ndarray, d: np.ndarray, order: int):
    """Elementary symmetric polynomial ``E_d`` of ``exp(η)`` per set (Gail-Lubin-Rubinstein recursion),
    returned as ``log E_d`` and, for ``order >= 1``, the conditional mean of ``Σ_{S'} z`` and (``order``
    2) its covariance. ``η`` is shifted by its set maximum; ``log E_d`` adds ``d`` times it back."""
    S, M, p = Z.shape
    D = int(d.max())
    eta = np.where(mask, eta, -np.inf)
    mx = eta.max(1)
    r = np.exp(eta - mx[:, None])
    E = np.zeros((S, D + 1))
    E[:, 0] = 1.0
    dE = np.zeros((S, D + 1, p)) if order >= 1 else None
    d2E = np.zeros((S, D + 1, p, p)) if order >= 2 else None
    for m in range(M):
        rm, zm = r[:, m], Z[:, m]
        for k in range(D, 0, -1):
            if order >= 2:
                zz = zm[:, :, None] * zm[:, None, :] * E[:, k - 1, None, None]
                zd = zm[:, :, None] * dE[:, k - 1, None, :]
                d2E[:, k] += rm[:, None, None] * (zz + zd + np.swapaxes(zd, 1, 2) + d2E[:, k - 1])
            if order >= 1:
                dE[:, k] += rm[:, None] * (zm * E[:, k - 1, None] + dE[:, k - 1])
            E[:, k] += rm * E[:, k - 1]
    idx = np.arange(S)
    Ed = E[idx, d]
    logE = np.log(Ed) + d * mx
    if order == 0:
        return logE, None, None
    mean = dE[idx, d] / Ed[:, None]
    if order == 1:
        return logE, mean, None
    cov = d2E[idx, d] / Ed[:, None, None] - mean[:, :, None] * mean[:, None, :]
    return logE, mean, cov


def _parts(beta: np.ndarray, Z: np.ndarray, sets: MatchedSets, order: int):
    """Per-set log-likelihood, score and information (``order`` 0, 1, 2)."""
    eta = Z @ beta
    mask, C = sets.mask, sets.case
    S, _, p = Z.shape
    ll = np.empty(S)
    U = np.empty((S, p)) if order >= 1 else None
    I = np.empty((S, p, p)) if order >= 2 else None
    obs_eta = np.where(C, eta, 0.0).sum(1)
    obs_z = np.einsum("sm,smp->sp", C.astype(float), Z)
    one = sets.n_case == 1
    if one.any():
        pi, lse = _softmax(eta[one], mask[one])
        ll[one] = obs_eta[one] - lse
        if order >= 1:
            zbar = np.einsum("sm,smp->sp", pi, Z[one])
            U[one] = obs_z[one] - zbar
        if order >= 2:
            dz = Z[one] - zbar[:, None, :]
            I[one] = np.einsum("sm,smp,smq->spq", pi, dz, dz)
    tie = ~one
    if tie.any():
        logE, mean, cov = _esp(Z[tie], eta[tie], mask[tie], sets.n_case[tie], order)
        ll[tie] = obs_eta[tie] - logE
        if order >= 1:
            U[tie] = obs_z[tie] - mean
        if order >= 2:
            I[tie] = cov
    return ll, U, I


def cond_loglike(beta: np.ndarray, Z: np.ndarray, sets: MatchedSets) -> float:
    """Exact conditional log-likelihood summed over sets."""
    return float(_parts(np.asarray(beta, float), Z, sets, 0)[0].sum())


def cond_scores(beta: np.ndarray, Z: np.ndarray, sets: MatchedSets) -> np.ndarray:
    """Per-set scores ``U_s`` (``[S, p]``)."""
    return _parts(np.asarray(beta, float), Z, sets, 1)[1]


def cond_information(beta: np.ndarray, Z: np.ndarray, sets: MatchedSets) -> np.ndarray:
    """Observed information summed over sets (``[p, p]``)."""
    return _parts(np.asarray(beta, float), Z, sets, 2)[2].sum(0)


# --------------------------------------------------------------------------------------------
# legacy helpers for equal-size one-case sets (the simulator's shape)
# --------------------------------------------------------------------------------------------


def as_sets(z: np.ndarray, case: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reshape rows into ``[S, M, p]`` sets of equal size ``M``; returns ``(Z, case_index, set_ids)``.

    Only for equal-size sets with one case each (the simulator's shape); general data go through
    :class:`MatchedSets`. Raises ``ValueError`` otherwise."""
    order = np.lexsort((np.arange(len(groups)), groups))
    g, z, case = groups[order], np.asarray(z)[order], np.asarray(case)[order]
    ids, counts = np.unique(g, return_counts=True)
    if len(set(counts.tolist())) != 1:
        raise ValueError(f"as_sets needs sets of one size (found sizes {sorted(set(counts.tolist()))}); "
                         "use MatchedSets for variable matching ratios")
    M = counts[0]
    C = case.reshape(len(ids), M)
    if not np.all(C.sum(1) == 1):
        raise ValueError("as_sets needs exactly one case in every matched set; use MatchedSets for tied cases")
    return z.reshape(len(ids), M, -1), C.argmax(1), ids


def set_scores(beta: np.ndarray, Z: np.ndarray, case_idx: np.ndarray) -> np.ndarray:
    """Per-set scores of equal-size one-case sets (``[S, p]``)."""
    eta = Z @ beta
    eta -= eta.max(1, keepdims=True)
    pi = np.exp(eta)
    pi /= pi.sum(1, keepdims=True)
    return Z[np.arange(len(Z)), case_idx] - np.einsum("sm,smp->sp", pi, Z)


def loglike(beta: np.ndarray, Z: np.ndarray, case_idx: np.ndarray) -> float:
    eta = Z @ beta
    m = eta.max(1, keepdims=True)
    return float(np.sum(eta[np.arange(len(Z)), case_idx] - (m[:, 0] + np.log(np.exp(eta - m).sum(1)))))


def information(beta: np.ndarray, Z: np.ndarray) -> np.ndarray:
    eta = Z @ beta
    eta -= eta.max(1, keepdims=True)
    pi = np.exp(eta)
    pi /= pi.sum(1, keepdims=True)
    zbar = np.einsum("sm,smp->sp", pi, Z)
    d = Z - zbar[:, None, :]
    return np.einsum("sm,smp,smq->pq", pi, d, d)


# --------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------


def _names(p: int, names: Sequence[str] | None) -> list[str]:
    return list(names) if names is not None else [f"column {j}" for j in range(p)]


def _quote(cols: Sequence[str]) -> str:
    return ", ".join(f"'{c}'" for c in cols)


def check_identifiable(Z: np.ndarray, sets: MatchedSets, names: Sequence[str] | None = None) -> None:
    """Raise :class:`DesignError` for a column constant within every set, or columns collinear within sets."""
    p = Z.shape[2]
    nm = _names(p, names)
    if sets.n_sets == 0:
        raise DesignError("no matched set has both a case and a control: nothing to fit")
    mask = sets.mask
    n = mask.sum(1, keepdims=True)
    mean = Z.sum(1) / n
    Dz = (Z - mean[:, None, :])[mask]  # within-set centred rows
    scale = np.abs(Dz).max(0)
    ref = np.abs(Z[mask]).max(0)
    const = scale <= 1e-10 * np.maximum(ref, 1.0)
    if const.any():
        cols = [nm[j] for j in np.flatnonzero(const)]
        raise DesignError(f"{_quote(cols)} {'is' if len(cols) == 1 else 'are'} constant within every matched set "
                          "(a matching variable, or a value shared by each set): the matching absorbs "
                          "its effect, so it cannot be estimated; remove it from the model")
    Dn = Dz / scale
    sv, vt = np.linalg.svd(Dn, full_matrices=False)[1:]
    if sv[-1] <= 1e-9 * sv[0]:
        v = vt[-1]
        cols = [nm[j] for j in np.flatnonzero(np.abs(v) > 1e-3 * np.abs(v).max())]
        raise DesignError(f"{_quote(cols)} are collinear within matched sets (a linear combination of them is "
                          "constant within every set), so their effects cannot be told apart; remove one")


def check_finite(z: np.ndarray, names: Sequence[str] | None = None, rows: np.ndarray | None = None) -> None:
    z = np.asarray(z, float)
    if z.ndim == 1:
        z = z[:, None]
    sub = z if rows is None else z[rows[rows >= 0]]
    bad = ~np.isfinite(sub)
    if bad.any():
        nm = _names(z.shape[1], names)
        parts = [f"'{nm[j]}' ({int(bad[:, j].sum())} rows)" for j in np.flatnonzero(bad.any(0))]
        raise DesignError(f"missing or non-finite values in {', '.join(parts)}: drop or impute those rows first")


def find_separation(Z: np.ndarray, sets: MatchedSets, tol: float = 1e-7) -> tuple[np.ndarray, np.ndarray]:
    """A separating direction, by linear programming; returns ``(u, predicted_sets)`` with ``u = 0`` and no
    sets when the cases and controls are not separated (the maximum-likelihood estimate then exists)."""
    from scipy.optimize import linprog

    P, which = sets.pairs(Z)
    p = Z.shape[2]
    if len(P) == 0:
        return np.zeros(p), np.zeros(0, int)
    scale = np.abs(P).max(0)
    scale[scale == 0] = 1.0
    Pn = P / scale
    res = linprog(-Pn.sum(0), A_ub=-Pn, b_ub=np.zeros(len(Pn)), bounds=[(-1, 1)] * p, method="highs")
    if res.status != 0 or -res.fun <= tol * max(1.0, len(Pn)) ** 0.5:
        return np.zeros(p), np.zeros(0, int)
    u = np.where(np.abs(res.x) > 1e-6, res.x, 0.0)
    if not np.any(u):
        return np.zeros(p), np.zeros(0, int)
    margin = Pn @ u
    strict = np.ones(sets.n_sets, bool)
    np.logical_and.at(strict, which, margin > 1e-9)
    return u / scale, np.flatnonzero(strict)


# --------------------------------------------------------------------------------------------
# fitting
# --------------------------------------------------------------------------------------------


@dataclass
class CLogitFit:
    params: np.ndarray  # NaN where not estimable
    cov_model: np.ndarray  # inverse observed information (model-based); NaN rows/cols where not estimable
    score_norm: float
    estimable: np.ndarray = None  # bool per column
    dropped_sets: np.ndarray = None  # sets perfectly predicted along a separated direction (indices into sets)
    notes: list[str] = field(default_factory=list)


def newton_sets(Z: np.ndarray, sets: MatchedSets, start: np.ndarray | None = None, maxiter: int = 50
                ) -> tuple[np.ndarray, bool]:
    """Damped Newton–Raphson on the exact conditional log-likelihood; returns ``(beta, converged)``."""
    beta = np.zeros(Z.shape[2]) if start is None else np.array(start, float)
    ll = cond_loglike(beta, Z, sets)
    converged = False
    for _ in range(maxiter):
        _, U, I = _parts(beta, Z, sets, 2)
        try:
            step = np.linalg.solve(I.sum(0), U.sum(0))
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(I.sum(0), U.sum(0), rcond=None)[0]
        for _half in range(30):  # halve until the likelihood does not decrease
            new = beta + step
            new_ll = cond_loglike(new, Z, sets)
            if new_ll >= ll - 1e-12:
                break
            step /= 2
        converged = abs(new_ll - ll) < 1e-12 * max(1.0, abs(ll))
        beta, ll = new, new_ll
        if converged:
            break
    return beta, converged


def newton(Z: np.ndarray, case_idx: np.ndarray, start: np.ndarray | None = None, maxiter: int = 50) -> np.ndarray:
    """Legacy: damped Newton on equal-size one-case sets given as ``(Z, case_index)``."""
    S, M, _ = Z.shape
    C = np.zeros((S, M), bool)
    C[np.arange(S), case_idx] = True
    sets = MatchedSets(np.arange(S), np.arange(S * M).reshape(S, M), C, np.ones(S, int), S * M)
    return newton_sets(Z, sets, start, maxiter)[0]


def _symptomatic(beta: np.ndarray, Z: np.ndarray, sets: MatchedSets, converged: bool) -> bool:
    if not converged or not np.all(np.isfinite(beta)):
        return True
    ll, _, I = _parts(beta, Z, sets, 2)
    if np.max(ll) > np.log1p(-1e-6):  # some set's observed cases predicted with probability > 1 - 1e-6
        return True
    ev = np.linalg.eigvalsh(I.sum(0))
    return bool(ev[0] <= 1e-10 * max(ev[-1], 1e-300))


def fit_clogit(z: np.ndarray, case: np.ndarray, groups: np.ndarray, tol: float = 1e-5,
               engine: str = "newton", maxiter: int = 100, names: Sequence[str] | None = None,
               sets: MatchedSets | None = None) -> CLogitFit:
    """Fit the conditional logit (exact likelihood, any matching ratio, tied cases allowed).

    ``engine``: ``"newton"`` (ours, vectorised) or ``"statsmodels"`` (``ConditionalLogit``; the
    tests hold the two equal). ``names`` label the columns in errors and warnings. Raises
    :class:`DesignError` for missing values, within-set-constant or collinear columns;
    warns :class:`SeparationWarning` and reports the separated columns as NaN (not estimable);
    raises :class:`ConvergenceError` if the score is not zero at the end."""
    if engine not in ("statsmodels", "newton"):
        raise ValueError(f"engine must be 'statsmodels' or 'newton', got {engine!r}")
    z = np.asarray(z, float)
    if z.ndim == 1:
        z = z[:, None]
    p = z.shape[1]
    nm = _names(p, names)
    sets = MatchedSets.from_groups(case, groups) if sets is None else sets
    check_finite(z, nm, sets.rows.ravel())
    Z = sets.gather(z)
    check_identifiable(Z, sets, nm)
    active = np.ones(p, bool)
    keep = np.ones(sets.n_sets, bool)
    notes: list[str] = []
    sub = sets
    for _round in range(p + 1):
        Za = Z[keep][:, :, active]
        if engine == "newton":
            b, conv = newton_sets(Za, sub, maxiter=maxiter)
        else:
            b, conv = _fit_statsmodels(Za, sub, maxiter)
        if not _symptomatic(b, Za, sub, conv):
            break
        u, predicted = find_separation(Za, sub)
        if not np.any(u):
            break
        cols_a = np.flatnonzero(active)
        sep = cols_a[u != 0]
        msg = (f"perfect separation: {_quote([nm[j] for j in sep])} separate{'s' if len(sep) == 1 else ''} cases from "
               f"controls within {len(predicted)} of {sub.n_sets} matched sets (every case's value at least every "
               f"control's in its set, along that direction); the maximum-likelihood estimate is infinite, so "
               f"{'this coefficient is' if len(sep) == 1 else 'these coefficients are'} reported as not estimable "
               f"and the model is refitted without {'it' if len(sep) == 1 else 'them'} and without the "
               f"{len(predicted)} perfectly predicted sets")
        warnings.warn(msg, SeparationWarning, stacklevel=2)
        notes.append(msg)
        active[sep] = False
        idx = np.flatnonzero(keep)
        keep[idx[predicted]] = False
        sub = MatchedSets(sets.ids[keep], sets.rows[keep], sets.case[keep], sets.n_case[keep], sets.n_rows)
        if not active.any() or sub.n_sets == 0:
            nan = np.full((p, p), np.nan)
            return CLogitFit(np.full(p, np.nan), nan, 0.0, active, np.flatnonzero(~keep), notes)
    Za = Z[keep][:, :, active]
    U = cond_scores(b, Za, sub).sum(0)
    norm = float(np.linalg.norm(U) / max(sub.n_sets, 1))
    if not np.all(np.isfinite(b)) or norm > tol:
        raise ConvergenceError(f"conditional logit did not converge after {maxiter} iterations: mean score norm "
                               f"{norm:.2e} (tolerance {tol:g}), params {b}; columns {_quote([nm[j] for j in np.flatnonzero(active)])}"
                               " — rescale columns with very different magnitudes, or raise maxiter")
    params = np.full(p, np.nan)
    params[active] = b
    cov = np.full((p, p), np.nan)
    cov[np.ix_(active, active)] = np.linalg.inv(cond_information(b, Za, sub))
    return CLogitFit(params, cov, norm, active, np.flatnonzero(~keep), notes)


def _fit_statsmodels(Z: np.ndarray, sets: MatchedSets, maxiter: int) -> tuple[np.ndarray, bool]:
    from statsmodels.discrete.conditional_models import ConditionalLogit

    m = sets.mask
    y = sets.case[m].astype(float)
    x = Z[m]
    g = np.repeat(np.arange(sets.n_sets), m.sum(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = ConditionalLogit(y, x, groups=g).fit(method="newton", maxiter=maxiter, disp=False)
        except np.linalg.LinAlgError:
            return np.full(Z.shape[2], np.nan), False
    b = np.asarray(res.params, float)
    conv = bool(res.mle_retvals.get("converged", True)) if hasattr(res, "mle_retvals") else True
    return b, conv
