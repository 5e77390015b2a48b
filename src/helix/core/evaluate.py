"""Deterministic evaluation: no augmentation, model in eval mode, fixed order, exact counts summed
over ranks (each rank reads a disjoint shard, nothing padded).

Single-label loaders yield class indices ``(B,)``: loss is cross-entropy, the metric top-1
accuracy. Multi-label loaders yield 0/1 label vectors ``(B, C)``: loss is binary cross-entropy
(mean over classes), and the scores of the whole set (gathered from every rank) give mAP and macro
ROC AUC (:mod:`helix.core.multilabel`); ``acc`` is then top-1 precision. A loader of padded
clips (:class:`~helix.data.batching.PadCollate`) also yields lengths ``(B,)``, handed to
``model(wave, lengths)`` so padding does not change a clip's scores.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from helix.core.distributed import all_gather_rows, all_reduce_sum
from helix.core.metrics import top1_hits


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device: torch.device,
             autocast: contextlib.AbstractContextManager | None = None, keep_outputs: bool = False,
             forward=None) -> dict:
    """Mean loss and top-1 accuracy of ``model`` over ``loader`` (all ranks together).

    Returns ``{"loss", "acc", "count"}``, plus ``"map"`` and ``"macro_auc"`` for multi-label
    data; loss and metrics are NaN for an empty loader. ``keep_outputs`` adds ``"targets"`` (N,) or
    (N, C) and ``"scores"`` (N, C) logits, gathered from every rank (for per-class diagnosis).
    ``forward(wave) -> float logits`` replaces the autocast model call for batches without lengths
    (a CUDA-graph replay, :class:`helix.core.graphs.CapturedStep`; its output is used before the
    next call). Sums stay on the device until the end: no host sync per batch.
    """
    was_training = model.training
    model.eval()
    # on the device (no sync per batch): float64 loss, exact int64 hit count
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct, count = torch.zeros((), dtype=torch.int64, device=device), 0
    multilabel = None
    scores, targets = [], []
    for wave, labels, *lengths in loader:
        wave = wave.to(device, non_blocking=True)          # (B, T)
        lengths = lengths[0] if lengths else None           # (B,) on the host, or None: all full
        labels = labels.to(device, non_blocking=True)      # (B,) indices or (B, C) 0/1 vectors
        multilabel = labels.ndim == 2
        if forward is not None and lengths is None:
            logits = forward(wave)
        else:
            with autocast or contextlib.nullcontext():
                logits = (model(wave) if lengths is None else model(wave, lengths)).float()   # (B, C)
        if multilabel:
            per_item = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none").mean(-1)
            loss_sum += per_item.sum()
        else:
            loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        correct += top1_hits(logits, labels)
        count += labels.shape[0]
        if multilabel or keep_outputs:
            scores.append(logits.cpu().numpy())
            targets.append(labels.cpu().numpy())
    model.train(was_training)
    loss_sum, correct, count = all_reduce_sum([float(loss_sum), int(correct), count], device)
    if count == 0:
        return {"loss": math.nan, "acc": math.nan, "count": 0}
    out = {"loss": loss_sum / count, "acc": correct / count, "count": int(count)}
    # every rank takes part in the gathers, also one whose shard was empty
    multilabel = bool(all_reduce_sum([float(bool(multilabel))], device)[0])
    if multilabel or keep_outputs:
        width = getattr(getattr(model, "config", None), "num_classes", None)
        s = np.concatenate(scores) if scores else np.zeros((0, width or 0), np.float32)
        t = np.concatenate(targets) if targets else np.zeros((0, width or 0) if multilabel else (0,), np.float32)
        s, t = all_gather_rows(s), all_gather_rows(t)
        if multilabel:
            from helix.core.multilabel import multilabel_metrics

            metrics = multilabel_metrics(t, s)
            out.update(map=metrics["mAP"], macro_auc=metrics["macro_auc"])
        if keep_outputs:
            out.update(scores=s, targets=t)
    return out
