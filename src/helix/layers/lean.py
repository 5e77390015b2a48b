"""When a block is *lean* (keeps little for backward and recomputes the rest): the ``lean_blocks`` setting.

``True`` / ``False`` apply to every batch. ``"auto"`` (the default) decides per batch from its size:
lean from :data:`LEAN_AUTO_TOKENS` tokens (batch x tokens per clip) up, where activations dominate a
step's memory (300 s raw at B=8 is 240,000 tokens: a Pure Mamba step there takes 7.9 GB lean on an
H200, RESULTS.md section 9, against 26.8 GB keeping everything, section 2), and keeping everything
below it, where memory is small and recomputing is pure cost. Measured on the H200 (section 10): the
kernels of a Pure Mamba raw training step at B=32 take 10% less time without the recompute at 1 s
(3,200 tokens) and 12% less at 5 s (16,000 tokens).
"""

from __future__ import annotations

import torch

LEAN_AUTO_TOKENS = 32_768
"""Batches with at least this many tokens run lean under ``"auto"`` (raw audio: B=32 from 10.24 s per
clip, B=8 from 41 s). Keeping everything costs ~110 KB per token for the paper's 6-layer models
(26.8 GB at 240,000 tokens, RESULTS.md section 2), so a batch just below the threshold needs ~3.6 GB;
the 30 s LibriSpeech preset (B=32, 96,000 tokens) stays lean, as do CUDA-graph pools of long buckets."""


def check_setting(value) -> None:
    """Refuse a ``lean_blocks`` value other than True, False or "auto" (one line naming it)."""
    if not (value is True or value is False or value == "auto"):
        raise ValueError(f"lean_blocks must be true, false or 'auto', got {value!r}")


def is_lean(setting, x: torch.Tensor) -> bool:
    """Whether a block given ``lean_blocks=setting`` runs lean on x (B, L, D).

    Without gradients nothing is kept either way; ``"auto"`` then answers True, so inference
    (``predict``, ``embed``, their CUDA graphs) runs the fused BiMamba op, as with ``True``."""
    return is_lean_batch(setting, x.shape[0] * x.shape[1])


def is_lean_batch(setting, tokens: int) -> bool:
    """:func:`is_lean` for a batch of ``tokens`` tokens in all."""
    if setting == "auto":
        return not torch.is_grad_enabled() or tokens >= LEAN_AUTO_TOKENS
    return bool(setting)
