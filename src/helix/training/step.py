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

import numpy as np
import torch

from helix.core.distributed import average_gradients
from helix.core.metrics import top1_hits
from helix.training.augment import augment_waveforms, host_to_device, step_generators
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
    average_grads: bool = False
    """Distributed without a DDP wrapper (captured steps): :func:`apply_update` averages the
    gradients over the ranks itself, before clipping."""


def split_batch(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(wave, labels)`` or ``(wave, labels, lengths)`` -> ``(wave, labels, lengths or None)``."""
    wave, labels, *rest = batch
    return wave, labels, (rest[0] if rest else None)


@dataclass
class MicroBatch:
    """One augmented micro-batch on the device, ready for the forward pass."""
    wave: torch.Tensor
    """(B, T) float32 waveforms, augmented and mixed."""
    labels: torch.Tensor
    """(B,) class indices or (B, C) label vectors: the targets weighted by ``lam``."""
    labels_b: torch.Tensor
    """The mixup partners' targets, weighted by ``1 - lam`` (``labels`` again without mixup)."""
    lam: float
    """Mixup weight of ``labels``; 1.0 without mixup."""
    lengths: torch.Tensor | None
    """(B,) samples per clip on the host, or None (every clip full)."""

    @property
    def hit_labels(self) -> torch.Tensor:
        """The targets top-1 hits are counted against (the dominant side of a mixed pair)."""
        return self.labels if self.lam >= 0.5 else self.labels_b


_COPY_STREAMS: dict[torch.device, torch.cuda.Stream] = {}


def upload(device: torch.device, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Host tensors (pinned by the loader) on ``device``. On CUDA they are copied on a side stream
    the compute stream then waits for: with the host a step ahead, a batch's upload runs while the
    previous step's kernels do, instead of after them (10 MB per 5 s batch at B=32)."""
    device = torch.device(device)
    if device.type != "cuda":
        return tuple(t.to(device) for t in tensors)
    stream = _COPY_STREAMS.get(device)
    if stream is None:
        stream = _COPY_STREAMS[device] = torch.cuda.Stream(device)
    compute = torch.cuda.current_stream(device)
    with torch.cuda.stream(stream):
        out = tuple(t.to(device, non_blocking=True) for t in tensors)
    compute.wait_stream(stream)
    for t in out:
        t.record_stream(compute)  # allocated on the copy stream, used (and freed) on the compute stream
    return out


def draw_micro_batch(p: StepParts, batch, step: int, micro: int) -> MicroBatch:
    """Move micro-batch ``micro`` of optimizer step ``step`` to the device and augment it there
    (shift, gain, noise, mixup), with random numbers from (seed, step, micro, rank) only."""
    cfg, accum = p.cfg, p.cfg.optim.grad_accum_steps
    wave, labels, lengths = split_batch(batch)
    wave, labels = upload(p.device, wave, labels)            # (B, T); (B,) or (B, C) label vectors
    wave = wave.float()
    labels_b, lam = labels, 1.0
    if cfg.augment.enabled:
        host, dev = step_generators(cfg.seed, step * accum + micro, p.rank, p.device)
        wave = augment_waveforms(wave, cfg.augment, cfg.data.sample_rate, host, dev, lengths)
        wave, labels, labels_b, lam, lengths = mixup_clips(wave, labels, lengths, cfg.augment.mixup_alpha, host)
    return MicroBatch(wave, labels, labels_b, lam, lengths)


def forward_backward(p: StepParts, wave, labels, labels_b, lam, lengths=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward under autocast, the (mixup) loss, and its backward scaled for accumulation -> the
    detached loss and the logits. ``lam`` is a float, or 0-dim tensors ``(lam, 1 - lam)`` in a
    captured step (so one graph serves every mixup weight)."""
    with p.autocast:
        # eager: lengths stay on the host, checked there without a device sync; a captured step
        # passes a device tensor already checked on the host (lengths_checked_on_host)
        logits = p.model(wave) if lengths is None else p.model(wave, lengths)   # (B, C)
    loss = mixup_loss(logits, labels, labels_b, lam, p.class_weights)
    p.scaler.scale(loss / p.cfg.optim.grad_accum_steps).backward()
    return loss.detach(), logits.detach()


def apply_update(p: StepParts, losses: list[torch.Tensor], correct: torch.Tensor) -> torch.Tensor:
    """Unscale, clip the global gradient norm, and step AdamW (skipping a non-finite update on the
    device) -> (mean loss, gradient norm before clipping, hits) as one device tensor."""
    if p.average_grads:
        average_gradients(p.raw_model.parameters(), torch.distributed.get_world_size())
    p.scaler.unscale_(p.optimizer)
    max_norm = p.cfg.optim.grad_clip if p.cfg.optim.grad_clip > 0 else math.inf
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
    p.optimizer.zero_grad(set_to_none=True)
    return stats


def optimizer_step(p: StepParts, batches, step: int) -> tuple[torch.Tensor, int]:
    """Optimizer step ``step`` (0-based, overall) over ``grad_accum_steps`` micro-batches drawn from
    ``batches`` -> ((mean loss, gradient norm before clipping, hits) on the device, examples)."""
    accum = p.cfg.optim.grad_accum_steps
    losses, correct, count = [], torch.zeros((), device=p.device), 0
    for micro in range(accum):
        m = draw_micro_batch(p, next(batches), step, micro)
        # only the last micro-batch all-reduces gradients under DDP
        sync = (p.model.no_sync() if p.distributed and not p.average_grads and micro < accum - 1
                else contextlib.nullcontext())
        with sync:
            loss, logits = forward_backward(p, m.wave, m.labels, m.labels_b, m.lam, m.lengths)
        losses.append(loss)
        correct += top1_hits(logits, m.hit_labels)
        count += m.labels.shape[0]
    stats = apply_update(p, losses, correct)
    p.scheduler.step()
    return stats, count


class GraphedSteps:
    """:func:`optimizer_step` with forward, loss, backward, clipping and AdamW replayed from one
    CUDA graph per batch shape (``TrainConfig.cuda_graphs``).

    The loader's batches are drawn and augmented eagerly on the device (a few launches: the random
    numbers come from the host), then copied into the graph's static inputs; the mixup weight
    enters as a tensor, so one graph serves every step. The schedule's learning rate lives in a
    device tensor per param group (filled by the scheduler, read by the captured fused AdamW).
    Length-bucketed batches: the clips' lengths are checked on the host, then enter the graph as a
    device tensor (one graph per bucket, and one for a bucket whose clips are all full).
    Returned stats are a copy (the graph's own output is overwritten by the next replay).
    ``capture=False`` runs the same step function eagerly (CPU tests of what the graph computes).
    """

    def __init__(self, p: StepParts, capture: bool = True, warmup: int = 3):
        from helix.core.graphs import CapturedStep

        self.p = p
        if capture:
            for group in p.optimizer.param_groups:
                group["capturable"] = True
                group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=p.device)
        self.run = CapturedStep(self._step, warmup=warmup) if capture else self._step

    def _step(self, *flat) -> torch.Tensor:
        from helix.frontends.checks import lengths_checked_on_host

        p, losses, correct = self.p, [], torch.zeros((), device=self.p.device)
        for i in range(0, len(flat), 6):
            wave, labels, labels_b, lam, hit_labels, lengths = flat[i:i + 6]
            with lengths_checked_on_host():
                loss, logits = forward_backward(p, wave, labels, labels_b, (lam[0], lam[1]), lengths)
            losses.append(loss)
            correct += top1_hits(logits, hit_labels)
        return apply_update(p, losses, correct)

    def __call__(self, batches, step: int) -> tuple[torch.Tensor, int]:
        from helix.frontends.checks import check_lengths

        p, flat, count = self.p, [], 0
        for micro in range(p.cfg.optim.grad_accum_steps):
            m = draw_micro_batch(p, next(batches), step, micro)
            # checked on the host copy; None when every clip is full (the unmasked graph)
            lengths = check_lengths(m.lengths, m.wave, p.raw_model.min_samples, "model input")
            # the host computes 1 - lam in double, as the eager step's float arithmetic does
            lam = host_to_device(np.array([m.lam, 1.0 - m.lam]), p.device, torch.float32)
            flat += [m.wave, m.labels, m.labels_b, lam, m.hit_labels, lengths]
            count += m.labels.shape[0]
        stats = self.run(*flat).clone()
        p.scheduler.step()
        return stats, count
