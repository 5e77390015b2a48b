"""Multi-label tagging metrics: mAP, macro ROC AUC and per-class AP (scikit-learn does the counting).

mAP is the mean over classes of the average precision (area under the precision-recall curve,
``sklearn.metrics.average_precision_score``), the figure AudioSet papers (AST, EfficientAT, BEATs,
Audio Mamba) report. A class without a positive in the evaluated set has no AP (and a class with
only positives no AUC): it is left out of the mean, reported as NaN and listed, never counted as 0.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = ["multilabel_metrics", "labels_above"]


def _array(x: Any, what: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor; this module does not import torch
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{what} must be (N, C), got shape {x.shape}")
    return x


def multilabel_metrics(targets: Any, scores: Any, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Metrics of ``scores`` (N, C) -- logits or probabilities, any monotone score -- against
    ``targets`` (N, C) of 0/1.

    Returns ``mAP`` and ``macro_auc`` (NaN when no class can be scored), ``per_class_ap`` and
    ``per_class_auc`` (name -> value, NaN where undefined), and ``unscored`` (names of classes
    without a positive example, left out of mAP).
    """
    from sklearn.metrics import average_precision_score, roc_auc_score  # scikit-learn loads slowly

    y, s = _array(targets, "targets"), _array(scores, "scores")
    if y.shape != s.shape:
        raise ValueError(f"targets {y.shape} and scores {s.shape} differ in shape")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("targets must hold only 0 and 1 (mixed-up or smoothed labels are training-only)")
    if not np.isfinite(s).all():
        raise ValueError("scores hold NaN or infinity")
    names = list(class_names) if class_names is not None else [str(c) for c in range(y.shape[1])]
    if len(names) != y.shape[1]:
        raise ValueError(f"{len(names)} class names for {y.shape[1]} columns")
    ap, auc = {}, {}
    for c, name in enumerate(names):
        positives = int(y[:, c].sum())
        ap[name] = float(average_precision_score(y[:, c], s[:, c])) if positives else math.nan
        auc[name] = float(roc_auc_score(y[:, c], s[:, c])) if 0 < positives < len(y) else math.nan
    return {
        "mAP": _mean(ap.values()),
        "macro_auc": _mean(auc.values()),
        "per_class_ap": ap,
        "per_class_auc": auc,
        "unscored": [name for name in names if math.isnan(ap[name])],
    }


def _mean(values) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def labels_above(probabilities: Any, class_names: Sequence[str], threshold: float = 0.5) -> list[list[tuple[str, float]]]:
    """Per row, ``(name, probability)`` of every class at or above ``threshold``, highest first."""
    p = _array(probabilities, "probabilities")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    out = []
    for row in p:
        picked = [(class_names[c], float(row[c])) for c in np.flatnonzero(row >= threshold)]
        out.append(sorted(picked, key=lambda t: -t[1]))
    return out
