"""Multi-head attention kernels: SDPA (fast path) and an explicit-softmax reference.

Shapes: q, k, v: (B, H, L, Dh) -> (B, H, L, Dh).

Variable lengths: ``lengths`` (B,) masks the keys past each clip's end (a boolean SDPA mask). Without
lengths no mask is passed at all, so SDPA keeps its FlashAttention path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from helix.ops.lengths import check_token_lengths, valid_mask

ATTENTION_IMPLS = ("sdpa", "explicit")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, impl: str = "sdpa",
              lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Bidirectional (non-causal) softmax attention; keys past ``lengths[b]`` are ignored.

    ``sdpa`` dispatches to FlashAttention / memory-efficient kernels on GPU (O(L) memory);
    ``explicit`` materialises the (B, H, L, L) matrix like ``nn.MultiheadAttention`` with
    ``need_weights=True`` -- kept to reproduce the paper's out-of-memory behaviour in benchmarks.
    """
    lengths = check_token_lengths(lengths, q.shape[0], k.shape[2])
    if impl == "sdpa":
        if lengths is None:
            return F.scaled_dot_product_attention(q, k, v)
        keep = valid_mask(lengths, k.shape[2])[:, None, None, :]  # (B, 1, 1, L): True = attend
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
    if impl == "explicit":
        return attention_reference(q, k, v, lengths)
    raise ValueError(f"attention impl must be one of {ATTENTION_IMPLS}, got {impl!r}")


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        lengths: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(Dh)) v with the full score matrix in memory; keys past lengths masked."""
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, H, L, L)
    scores = scores.float()
    if lengths is not None:
        keep = valid_mask(lengths, k.shape[2])[:, None, None, :]
        scores = scores.masked_fill(~keep, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1).to(v.dtype), v)
