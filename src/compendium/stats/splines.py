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


# Harrell's default knot quantiles (Regression Modeling Strategies, table 2.3; Hmisc::rcspline.eval)
HARRELL_QUANTILES = {
    3: (0.10, 0.50, 0.90),
    4: (0.05, 0.35, 0.65, 0.95),
    5: (0.05, 0.275, 0.50, 0.725, 0.95),
    6: (0.05, 0.23, 0.41, 0.59, 0.77, 0.95),
    7: (0.025, 0.1833, 0.3417, 0.50, 0.6583, 0.8167, 0.975),
}


def quantile_knots(x: np.ndarray, probs: tuple[float, ...] | int = (0.05, 0.35, 0.65, 0.95)) -> np.ndarray:
    """Knots at quantiles of ``x`` (numpy's default, R's ``type = 7``); an integer ``k`` (3-7) takes
    Harrell's default quantiles for ``k`` knots."""
    if isinstance(probs, (int, np.integer)):
        if int(probs) not in HARRELL_QUANTILES:
            raise ValueError(f"a number of knots must be 3 to 7 (Harrell's defaults), got {probs}; pass knot values instead")
        probs = HARRELL_QUANTILES[int(probs)]
    k = np.quantile(np.asarray(x, float), probs)
    if np.any(np.diff(k) <= 0):
        raise ValueError(f"knots must increase strictly; got {k} from probabilities {probs} "
                         "(the exposure has too few distinct values for that many knots)")
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
