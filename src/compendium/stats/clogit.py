"""Conditional logistic regression for matched sets with one case each: the fit by
statsmodels' ``ConditionalLogit`` (with a convergence check of our own, since it reports
none), and the per-set score and information used by the sandwich variance.

For a set ``s`` with covariate rows ``z_j`` and case ``c``, the conditional log-likelihood is
``ℓ_s(β) = z_c·β - log Σ_j exp(z_j·β)``, the score ``U_s = z_c - Σ_j π_j z_j`` with
``π = softmax(zβ)``, and the information ``Σ_j π_j (z_j - z̄)(z_j - z̄)ᵀ``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


class ConvergenceError(RuntimeError):
    """The conditional-likelihood fit did not reach a stationary point."""


def as_sets(z: np.ndarray, case: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reshape rows into ``[S, M, p]`` sets of equal size ``M``; returns ``(Z, case_index, set_ids)``.

    Raises ``ValueError`` unless every set has the same size and exactly one case."""
    order = np.lexsort((np.arange(len(groups)), groups))
    g, z, case = groups[order], z[order], np.asarray(case)[order]
    ids, counts = np.unique(g, return_counts=True)
    if len(set(counts.tolist())) != 1:
        raise ValueError(f"matched sets must all have the same size (found sizes {sorted(set(counts.tolist()))})")
    M = counts[0]
    C = case.reshape(len(ids), M)
    if not np.all(C.sum(1) == 1):
        raise ValueError("every matched set must contain exactly one case")
    return z.reshape(len(ids), M, -1), C.argmax(1), ids


def set_scores(beta: np.ndarray, Z: np.ndarray, case_idx: np.ndarray) -> np.ndarray:
    """Per-set scores ``U_s`` (``[S, p]``)."""
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


@dataclass
class CLogitFit:
    params: np.ndarray
    cov_model: np.ndarray  # inverse observed information (model-based)
    score_norm: float


def newton(Z: np.ndarray, case_idx: np.ndarray, start: np.ndarray | None = None, maxiter: int = 50) -> np.ndarray:
    """Damped Newton–Raphson on the conditional log-likelihood of one-case sets (vectorised)."""
    beta = np.zeros(Z.shape[2]) if start is None else np.array(start, float)
    ll = loglike(beta, Z, case_idx)
    for _ in range(maxiter):
        U = set_scores(beta, Z, case_idx).sum(0)
        step = np.linalg.solve(information(beta, Z), U)
        for _half in range(30):  # halve until the likelihood does not decrease
            new = beta + step
            new_ll = loglike(new, Z, case_idx)
            if new_ll >= ll - 1e-12:
                break
            step /= 2
        beta, converged = new, abs(new_ll - ll) < 1e-12 * max(1.0, abs(ll))
        ll = new_ll
        if converged:
            break
    return beta


def fit_clogit(z: np.ndarray, case: np.ndarray, groups: np.ndarray, tol: float = 1e-5,
               engine: str = "statsmodels", maxiter: int = 100) -> CLogitFit:
    """Fit the conditional logit and check the total score ourselves (statsmodels reports no
    convergence flag). ``engine``: ``"statsmodels"`` (``ConditionalLogit``, Newton) or
    ``"newton"`` (our vectorised Newton for one-case sets; the tests hold the two equal, and the
    simulation uses it because it is about 50 times faster)."""
    z = np.asarray(z, float)
    Z, c, _ = as_sets(z, case, groups)
    if engine == "statsmodels":
        from statsmodels.discrete.conditional_models import ConditionalLogit

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = ConditionalLogit(np.asarray(case, float), z, groups=groups).fit(method="newton", maxiter=maxiter, disp=False)
        params = np.asarray(res.params, float)
    elif engine == "newton":
        params = newton(Z, c, maxiter=maxiter)
    else:
        raise ValueError(f"engine must be 'statsmodels' or 'newton', got {engine!r}")
    score = set_scores(params, Z, c).sum(0)
    norm = float(np.linalg.norm(score) / len(Z))
    if not np.all(np.isfinite(params)) or norm > tol:
        raise ConvergenceError(f"conditional logit did not converge: mean score norm {norm:.2e} (tolerance {tol:g}), "
                               f"params {params}; check the scaling of the spline terms")
    info = information(params, Z)
    return CLogitFit(params, np.linalg.inv(info), norm)
