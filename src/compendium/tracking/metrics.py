"""OTB-style tracking metrics (Wu, Lim, Yang 2013): precision (centre error within a
threshold) and success (overlap above a threshold, summarised by the area under the curve)."""

from __future__ import annotations

import numpy as np


def center_errors(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.asarray(pred, float) - np.asarray(truth, float), axis=1)


def ious(pred_boxes: np.ndarray, true_boxes: np.ndarray) -> np.ndarray:
    """IoU of boxes ``(x0, y0, w, h)`` row by row."""
    p, t = np.asarray(pred_boxes, float), np.asarray(true_boxes, float)
    x0 = np.maximum(p[:, 0], t[:, 0])
    y0 = np.maximum(p[:, 1], t[:, 1])
    x1 = np.minimum(p[:, 0] + p[:, 2], t[:, 0] + t[:, 2])
    y1 = np.minimum(p[:, 1] + p[:, 3], t[:, 1] + t[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = p[:, 2] * p[:, 3] + t[:, 2] * t[:, 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def precision_curve(errors: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    return np.array([(errors <= th).mean() for th in thresholds])


def success_curve(overlaps: np.ndarray, thresholds: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """``(thresholds, success rates, AUC)``; thresholds default to 0..1 in 21 steps (OTB)."""
    th = np.linspace(0, 1, 21) if thresholds is None else thresholds
    rates = np.array([(overlaps > x).mean() for x in th])
    return th, rates, float(rates.mean())
