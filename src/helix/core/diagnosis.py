"""Per-class diagnosis of a single-label run: accuracy and F1 per class and a confusion matrix
(scikit-learn counts, matplotlib draws), written into the run folder when training ends.

It lives in ``core`` rather than ``reporting`` because the training loop writes it and the two
are sibling tiers that never import each other.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np

from helix.utils.io import atomic_write

__all__ = ["per_class_metrics", "write_diagnosis"]


def per_class_metrics(targets: np.ndarray, predictions: np.ndarray, class_names: Sequence[str]) -> dict:
    """targets, predictions (N,) class indices -> ``{"confusion": (C, C) counts (row = true class),
    "rows": [{class, support, accuracy, precision, recall, f1}], "macro_f1", "balanced_accuracy"}``.

    A class's accuracy is the share of its clips predicted as it (its recall); classes absent from
    ``targets`` get NaN accuracy and are left out of the macro means.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support  # loads slowly

    labels = np.arange(len(class_names))
    conf = confusion_matrix(targets, predictions, labels=labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        targets, predictions, labels=labels, zero_division=0)
    present = support > 0
    rows = [{"class": name, "support": int(support[c]),
             "accuracy": float(recall[c]) if present[c] else float("nan"),
             "precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c])}
            for c, name in enumerate(class_names)]
    return {"confusion": conf, "rows": rows,
            "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
            "balanced_accuracy": float(recall[present].mean()) if present.any() else float("nan")}


def write_diagnosis(folder: str | Path, targets: np.ndarray, predictions: np.ndarray,
                    class_names: Sequence[str], title: str = "") -> dict:
    """Write ``per_class.csv`` and ``confusion_matrix.png`` into ``folder``; returns
    :func:`per_class_metrics` plus the two paths (``csv``, ``png``)."""
    folder = Path(folder)
    result = per_class_metrics(targets, predictions, class_names)
    csv_path, png_path = folder / "per_class.csv", folder / "confusion_matrix.png"
    with atomic_write(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["class", "support", "accuracy", "precision", "recall", "f1"])
        writer.writeheader()
        for row in result["rows"]:
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    _plot_confusion(result["confusion"], class_names, png_path, title)
    return {**result, "csv": csv_path, "png": png_path}


def _plot_confusion(conf: np.ndarray, class_names: Sequence[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # file output only
    import matplotlib.pyplot as plt

    c = len(class_names)
    rates = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)  # each true class's row sums to 1
    size = min(3.0 + 0.35 * c, 24.0)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = np.arange(c)
    ax.set_xticks(ticks, labels=class_names, rotation=90 if c > 6 else 0, fontsize=8)
    ax.set_yticks(ticks, labels=class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if c <= 30:  # counts stay readable up to about 30 classes
        for i in range(c):
            for j in range(c):
                ax.text(j, i, str(conf[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set_title(title or "confusion matrix (rows: share of each true class)", fontsize=9)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
