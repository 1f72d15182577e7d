"""Statistics: restricted cubic splines, conditional logistic regression with a stacked
sandwich variance, and regression calibration of pooled biomarker data."""
