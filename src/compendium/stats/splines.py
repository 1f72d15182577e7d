"""Restricted cubic splines in the truncated-power form (Harrell; the form of the pooling
paper's R code, arXiv:1911.09254). With knots ``t_1 < ... < t_K`` the basis has ``K - 1``
columns::

    f_1(x) = x
    f_{j+1}(x) = [(x - t_j)_+^3 - (x - t_{K-1})_+^3 (t_K - t_j)/(t_K - t_{K-1})
                  + (x - t_K)_+^3 (t_{K-1} - t_j)/(t_K - t_{K-1})] / s,    j = 1 .. K-2

linear beyond the boundary knots. ``s = (t_K - t_1)^2`` (Harrell's ``norm = 2``) keeps the
cubic terms on the scale of ``x``: unscaled, on a nmol/L scale they reach 10^5–10^6 and the
conditional-likelihood optimiser silently returns zeros. Pass ``scale=False`` for the paper's
raw coefficients.
"""

from __future__ import annotations

import numpy as np


def quantile_knots(x: np.ndarray, probs: tuple[float, ...] = (0.05, 0.35, 0.65, 0.95)) -> np.ndarray:
    k = np.quantile(np.asarray(x, float), probs)
    if np.any(np.diff(k) <= 0):
        raise ValueError(f"knots must increase strictly; got {k} from probabilities {probs}")
    return k


def rcs_basis(x: np.ndarray, knots: np.ndarray, scale: bool = True) -> np.ndarray:
    """The ``[n, K-1]`` basis at ``x`` (any shape; flattened)."""
    t = np.asarray(knots, float)
    if t.ndim != 1 or len(t) < 3 or np.any(np.diff(t) <= 0):
        raise ValueError(f"need at least 3 strictly increasing knots, got {knots}")
    x = np.asarray(x, float).ravel()
    K = len(t)
    s = (t[-1] - t[0]) ** 2 if scale else 1.0
    cube = lambda v: np.clip(v, 0, None) ** 3
    cols = [x]
    for j in range(K - 2):
        cols.append((cube(x - t[j]) - cube(x - t[K - 2]) * (t[K - 1] - t[j]) / (t[K - 1] - t[K - 2])
                     + cube(x - t[K - 1]) * (t[K - 2] - t[j]) / (t[K - 1] - t[K - 2])) / s)
    return np.column_stack(cols)
