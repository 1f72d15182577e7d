"""Statistics: restricted cubic splines, conditional logistic regression (any matching ratio,
tied cases by the exact likelihood) with a stacked sandwich variance, and regression calibration
of pooled biomarker data. :mod:`compendium.stats.pooling` is the public API for a user's own
pooled nested case-control data (also ``compendium calibrate``)."""
