"""Class imbalance: per-item sampling weights and per-class loss weights from a dataset's labels.

Works on :class:`~helix.data.dataset.ClipDataset` (``labels`` ``(N,)`` class indices),
:class:`~helix.data.labels.MultiLabelClipDataset` (``targets`` ``(N, C)``) and a
``torch.utils.data.Subset`` of either (the held-out validation route). Reading labels never decodes
audio.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Subset

__all__ = ["balanced_sample_weights", "class_loss_weights", "label_table"]


def label_table(dataset: Any) -> np.ndarray:
    """``(N, C)`` 0/1 float64: which classes each item of ``dataset`` carries."""
    chain = []  # subset indices, outermost first
    while isinstance(dataset, Subset):
        chain.append(np.asarray(dataset.indices, dtype=np.int64))
        dataset = dataset.dataset
    if hasattr(dataset, "targets"):
        table = np.asarray(dataset.targets, dtype=np.float64)
    elif hasattr(dataset, "labels") and hasattr(dataset, "class_names"):
        labels = np.asarray(dataset.labels)
        table = np.zeros((len(labels), len(dataset.class_names)))
        table[np.arange(len(labels)), labels] = 1.0
    else:
        raise TypeError(f"{type(dataset).__name__} has no labels to balance (needs .labels and .class_names, "
                        "or .targets)")
    for ids in reversed(chain):  # an outer subset indexes the inner one's items
        table = table[ids]
    return table


def balanced_sample_weights(dataset: Any) -> np.ndarray:
    """``(N,)`` weights for ``torch.utils.data.WeightedRandomSampler``-style draws (training uses
    ``helix.core.distributed.ResumableWeightedSampler`` for fixed-length batches and
    :class:`helix.data.batching.BalancedBucketBatchSampler` for length buckets).

    Single-label: ``1 / count(class)``, so every class is drawn equally often. Multi-label: the sum
    of ``1 / count`` over the item's labels (the label-frequency weighting AudioSet training uses),
    so items carrying a rare tag come up more often. Items without a label get the smallest weight.
    """
    table = label_table(dataset)
    counts = table.sum(axis=0)
    inverse = np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)
    weights = table @ inverse
    if (weights == 0).any():
        weights[weights == 0] = weights[weights > 0].min() if (weights > 0).any() else 1.0
    return weights


def class_loss_weights(dataset: Any, multilabel: bool | None = None) -> np.ndarray:
    """``(C,)`` loss weights that undo the class frequencies of ``dataset``.

    Single-label: ``N / (C * count)`` (mean 1 over a balanced set; cross-entropy ``weight=``).
    Multi-label: ``negatives / positives`` per class (``BCEWithLogitsLoss(pos_weight=)``). A class
    without examples gets 1 (its loss term never fires anyway).
    """
    table = label_table(dataset)
    if multilabel is None:
        multilabel = hasattr(_innermost(dataset), "targets")
    n, c = table.shape
    pos = table.sum(axis=0)
    if multilabel:
        return np.divide(n - pos, pos, out=np.ones(c), where=pos > 0)
    return np.divide(n, c * pos, out=np.ones(c), where=pos > 0)


def _innermost(dataset: Any) -> Any:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset
