"""Deterministic evaluation: no augmentation, model in eval mode, fixed order, exact counts summed
over ranks (each rank reads a disjoint shard, nothing padded)."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from helix.core.metrics import count_correct
from helix.core.distributed import all_reduce_sum


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device: torch.device,
             autocast: contextlib.AbstractContextManager | None = None) -> dict:
    """Mean cross-entropy and top-1 accuracy of ``model`` over ``loader`` (all ranks together).

    Returns ``{"loss", "acc", "count"}``; loss and acc are NaN for an empty loader.
    """
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    for wave, labels in loader:
        wave = wave.to(device, non_blocking=True)          # (B, T)
        labels = labels.to(device, non_blocking=True)      # (B,)
        with autocast or contextlib.nullcontext():
            logits = model(wave)                           # (B, C)
        loss_sum += float(F.cross_entropy(logits.float(), labels, reduction="sum"))
        correct += count_correct(logits, labels)
        count += labels.numel()
    model.train(was_training)
    loss_sum, correct, count = all_reduce_sum([loss_sum, correct, count], device)
    if count == 0:
        return {"loss": float("nan"), "acc": float("nan"), "count": 0}
    return {"loss": loss_sum / count, "acc": correct / count, "count": int(count)}
