"""When a block is *lean* (keeps little for backward and recomputes the rest): the ``lean_blocks`` setting.

``True`` / ``False`` apply to every batch. ``"auto"`` (the default) decides per batch from its size:
lean from :data:`LEAN_AUTO_TOKENS` tokens (batch x tokens per clip) up, where activations dominate a
step's memory (300 s raw at B=8 is 240,000 tokens: the lean blocks halve the peak there), and keeping
everything below it, where memory is small and recomputing is pure cost. Measured on the H200
(benchmarks/RESULTS.md section 10): the kernels of a Pure Mamba raw training step at B=32 take 10%
less time without the recompute at 1 s (3,200 tokens) and 12% less at 5 s (16,000 tokens).
"""

from __future__ import annotations

import torch

LEAN_AUTO_TOKENS = 131_072
"""Batches with at least this many tokens run lean under ``"auto"`` (B=32 from 41 s raw, B=8 from 164 s).
Below it the blocks keep everything: ~50 KB per token for a 6-layer model, at most ~7 GB."""

SETTINGS = (True, False, "auto")


def check_setting(value) -> None:
    if value not in SETTINGS or (value is not True and value is not False and not isinstance(value, str)):
        raise ValueError(f"lean_blocks must be true, false or 'auto', got {value!r}")


def is_lean(setting, x: torch.Tensor) -> bool:
    """Whether a block given ``lean_blocks=setting`` runs lean on x (B, L, D)."""
    if setting == "auto":
        return x.shape[0] * x.shape[1] >= LEAN_AUTO_TOKENS
    return bool(setting)
