"""LayerNorm over the last axis, computed in fp32 and returned in another dtype: the specification.

    x (..., D) -> (x - mean) / sqrt(var + eps) * weight + bias, as ``out_dtype``

This is what ``nn.LayerNorm`` under autocast followed by ``.to(out_dtype)`` computes (autocast runs
layer_norm in fp32); the blocks' pre-norms feed matmuls that take ``out_dtype`` anyway.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def layer_norm_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                         out_dtype: torch.dtype) -> torch.Tensor:
    """x (..., D), weight and bias (D,) -> (..., D) in ``out_dtype``; statistics in fp32."""
    return F.layer_norm(x.float(), (x.shape[-1],), weight.float(), bias.float(), eps).to(out_dtype)
