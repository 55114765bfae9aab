"""Calibration of a classifier's top-class probability: reliability-diagram bins and the expected calibration
error they give (the same equal-width bins as torchmetrics' `MulticlassCalibrationError`, which the classification
task logs as `test/<split>/ece`)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

N_BINS = 15


def reliability_bins(confidence: Sequence[float], correct: Sequence[bool], n_bins: int = N_BINS) -> dict[str, list]:
    """Equal-width bins of `confidence` (the top class's probability) over [0, 1]: bin i holds
    lower_i <= confidence < upper_i (the last bin also 1.0). Per bin: `count`, mean `confidence` and `accuracy`
    (share of `correct`; 0 for empty bins), and `ece` = sum_i count_i / n * |accuracy_i - confidence_i|."""
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.nan_to_num(np.bincount(index, conf, minlength=n_bins) / count)
        accuracy = np.nan_to_num(np.bincount(index, hit, minlength=n_bins) / count)
    ece = float(np.sum(count / max(len(conf), 1) * np.abs(accuracy - mean_conf)))
    return {"lower": edges[:-1].tolist(), "upper": edges[1:].tolist(), "count": count.astype(int).tolist(),
            "confidence": mean_conf.tolist(), "accuracy": accuracy.tolist(), "ece": ece}


__all__ = ["reliability_bins", "N_BINS"]
