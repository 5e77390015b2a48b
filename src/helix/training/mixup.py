"""Mixup (Zhang et al., 2018) for classification: one Beta(alpha, alpha) weight per batch, each
example mixed with a partner from a random permutation of the batch (the timm convention).

Single-label batches carry class indices ``(B,)`` and the loss mixes two cross-entropies;
multi-label batches carry 0/1 label vectors ``(B, C)`` and the loss is binary cross-entropy
against the mixed vector ``lam * a + (1 - lam) * b`` (the AudioSet recipe of AST / EfficientAT)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from helix.training.augment import host_to_device


def mixup_batch(wave: torch.Tensor, labels: torch.Tensor, alpha: float, host: np.random.Generator):
    """wave (B, T), labels (B,) or (B, C) -> (mixed wave (B, T), labels_a, labels_b, lam).

    ``lam`` weighs ``labels_a``; alpha <= 0 returns the batch unmixed with lam = 1.
    """
    return mixup_clips(wave, labels, None, alpha, host)[:4]


def mixup_clips(wave: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor | None, alpha: float,
                host: np.random.Generator):
    """:func:`mixup_batch` for a padded batch: also lengths (B,) -> the mixed clips' lengths, each
    the longer of its pair (the shorter clip's padding is zeros, so the sum is the longer clip
    with the shorter one over its start). Draws the same numbers as :func:`mixup_batch`.

    -> (mixed wave (B, T), labels_a, labels_b, lam, lengths (B,) or None).
    """
    if alpha <= 0 or wave.shape[0] < 2:
        return wave, labels, labels, 1.0, lengths
    lam = float(host.beta(alpha, alpha))
    order = host.permutation(wave.shape[0])
    perm = host_to_device(order, wave.device)  # asynchronous: a blocking copy would wait for the GPU

    def index_for(t: torch.Tensor) -> torch.Tensor:
        """The permutation where ``t`` lives (the lengths stay on the host)."""
        return perm if t.device == perm.device else host_to_device(order, t.device)

    mixed = lam * wave + (1.0 - lam) * wave[perm]
    if lengths is not None:
        lengths = torch.maximum(lengths, lengths[index_for(lengths)])
    return mixed, labels, labels[index_for(labels)], lam, lengths


def mixup_cross_entropy(logits: torch.Tensor, labels_a: torch.Tensor, labels_b: torch.Tensor,
                        lam: float, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy against the mixed targets; logits (B, C), labels (B,), computed in fp32.
    ``weight`` (C,) weighs each class's terms (class-balanced loss)."""
    logits = logits.float()
    loss = F.cross_entropy(logits, labels_a, weight=weight)
    mixed, w_a, w_b = _mix_weights(lam)
    if mixed:
        loss = w_a * loss + w_b * F.cross_entropy(logits, labels_b, weight=weight)
    return loss


def _mix_weights(lam) -> tuple[bool, object, object]:
    """``lam`` -> (mix at all?, weight of a, weight of b). A float mixes only below 1; a captured
    step passes the pair ``(lam, 1 - lam)`` as 0-dim device tensors and always mixes (with weights
    (1, 0) that is exactly the unmixed loss, so one graph serves every step)."""
    if isinstance(lam, tuple):
        return True, lam[0], lam[1]
    return lam < 1.0, lam, 1.0 - lam


def mixup_binary_cross_entropy(logits: torch.Tensor, targets_a: torch.Tensor, targets_b: torch.Tensor,
                               lam: float, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean binary cross-entropy of logits (B, C) against ``lam * a + (1 - lam) * b`` (B, C), in
    fp32 (mean over items and classes); ``pos_weight`` (C,) weighs each class's positive terms."""
    mixed, w_a, w_b = _mix_weights(lam)
    targets = w_a * targets_a.float() + w_b * targets_b.float() if mixed else targets_a.float()
    return F.binary_cross_entropy_with_logits(logits.float(), targets, pos_weight=pos_weight)


def mixup_loss(logits: torch.Tensor, labels_a: torch.Tensor, labels_b: torch.Tensor, lam: float,
               class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """The training loss for either kind of label: class indices (B,) -> cross-entropy, label
    vectors (B, C) -> binary cross-entropy; ``class_weights`` (C,) is CE's ``weight`` or BCE's
    ``pos_weight``."""
    if labels_a.ndim == 2:
        return mixup_binary_cross_entropy(logits, labels_a, labels_b, lam, class_weights)
    return mixup_cross_entropy(logits, labels_a, labels_b, lam, class_weights)

