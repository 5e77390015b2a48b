"""One optimizer step: ``grad_accum_steps`` micro-batches, each augmented on the device (shift,
gain, noise, mixup), forward under autocast, backward (loss-scaled for fp16); then unscale, clip
the global gradient norm, and step AdamW and the schedule -- skipping the update on the device when
the loss or norm is not finite.

A batch is ``(wave (B, T), labels)`` or, from :class:`~helix.data.batching.PadCollate`,
``(wave (B, T), labels, lengths (B,) int64)``: the model then gets ``model(wave, lengths)``, the
augmentation keeps each clip within its length, and a mixed pair takes the longer length.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from helix.core.metrics import top1_hits
from helix.training.augment import augment_waveforms, step_generators
from helix.training.config import TrainConfig
from helix.training.mixup import mixup_clips, mixup_loss


@dataclass
class StepParts:
    """What a step works on; built once by the trainer."""
    cfg: TrainConfig
    model: torch.nn.Module
    """The module called for the forward pass (DDP / compiled wrapper)."""
    raw_model: torch.nn.Module
    """The bare model, whose parameters are clipped."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    autocast: contextlib.AbstractContextManager
    device: torch.device
    rank: int = 0
    distributed: bool = False
    class_weights: torch.Tensor | None = None


def split_batch(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(wave, labels)`` or ``(wave, labels, lengths)`` -> ``(wave, labels, lengths or None)``."""
    wave, labels, *rest = batch
    return wave, labels, (rest[0] if rest else None)


def optimizer_step(p: StepParts, batches, step: int) -> tuple[torch.Tensor, int]:
    """Optimizer step ``step`` (0-based, overall) over ``grad_accum_steps`` micro-batches drawn from
    ``batches`` -> ((mean loss, gradient norm before clipping, hits) on the device, examples)."""
    cfg, accum = p.cfg, p.cfg.optim.grad_accum_steps
    losses, correct, count = [], torch.zeros((), device=p.device), 0
    for micro in range(accum):
        wave, labels, lengths = split_batch(next(batches))
        wave = wave.to(p.device, non_blocking=True).float()       # (B, T)
        labels = labels.to(p.device, non_blocking=True)           # (B,) or (B, C) label vectors
        labels_b, lam = labels, 1.0
        if cfg.augment.enabled:
            host, dev = step_generators(cfg.seed, step * accum + micro, p.rank, p.device)
            wave = augment_waveforms(wave, cfg.augment, cfg.data.sample_rate, host, dev, lengths)
            wave, labels, labels_b, lam, lengths = mixup_clips(wave, labels, lengths, cfg.augment.mixup_alpha, host)
        # only the last micro-batch all-reduces gradients under DDP
        sync = p.model.no_sync() if p.distributed and micro < accum - 1 else contextlib.nullcontext()
        with sync:
            with p.autocast:
                # lengths stay on the host: the model checks them there without a device sync
                logits = p.model(wave) if lengths is None else p.model(wave, lengths)   # (B, C)
            loss = mixup_loss(logits, labels, labels_b, lam, p.class_weights)
            p.scaler.scale(loss / accum).backward()
        losses.append(loss.detach())
        correct += top1_hits(logits.detach(), labels if lam >= 0.5 else labels_b)
        count += labels.shape[0]
    p.scaler.unscale_(p.optimizer)
    max_norm = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(p.raw_model.parameters(), max_norm)
    stats = torch.stack([torch.stack(losses).mean().float(), grad_norm.float(), correct.float()])
    if p.scaler.is_enabled():
        p.scaler.step(p.optimizer)  # fp16: the scaler skips overflowing updates itself
        p.scaler.update()
    else:
        # a non-finite loss or gradient norm skips this update on the device, so the model is
        # never trained on garbage even before the host reads the numbers
        p.optimizer.found_inf = (~torch.isfinite(stats[:2]).all()).float()
        p.optimizer.step()
    p.scheduler.step()
    p.optimizer.zero_grad(set_to_none=True)
    return stats, count
