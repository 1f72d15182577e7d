"""The calibration chapter's checked exercises (see :mod:`compendium.exercises`); its notebook imports
``check`` from here, so only this chapter depends on these reference solutions."""

from __future__ import annotations

from compendium.exercises import check, register

__all__ = ["check"]


def _calibration_basis(scale: bool = True) -> float:
    import numpy as np

    from compendium.stats.splines import rcs_basis

    return float(rcs_basis(np.array([50.0]), np.array([20.0, 40.0, 60.0, 80.0]), scale=scale)[0, 1])


def _calibration_linear() -> float:
    return 50.0


register("calibration", 1, "A restricted cubic spline by hand", _calibration_basis,
         "With knots t = (20, 40, 60, 80), the second basis column at x is [(x−t1)³₊ − (x−t3)³₊·(t4−t1)/(t4−t3) + "
         "(x−t4)³₊·(t3−t1)/(t4−t3)] / (t4−t1)²; `compendium.stats.splines.rcs_basis` computes it (scale=True divides "
         "by (t4 − t1)²).",
         "import numpy as np\nfrom compendium.stats.splines import rcs_basis\n\n"
         "answer = ...  # rcs_basis at x = 50 with knots (20, 40, 60, 80): the second column (a float)",
         rel=1e-6,
         mistakes=((lambda: _calibration_basis(scale=False), "That is the unscaled cube: the package divides by "
                    "(t_K − t_1)² so that the columns have the exposure's scale."),
                   (_calibration_linear, "That is the first column, x itself: the exercise asks for the second (the first "
                    "non-linear term).")))
