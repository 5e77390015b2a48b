"""A block's output added to the residual stream with its projection's bias: the specification.

    x (..., D) + (y (..., D) + bias (D,))

x is the residual stream (fp32), y the block's product (bf16 under autocast), bias the projection's (fp32):
y is widened, the bias added, then the stream, in that order (two fp32 roundings), as the BiMamba block
wrote it before the kernel (``x + (out + proj.bias)``).
"""

from __future__ import annotations

import torch


def add_bias_residual_reference(x: torch.Tensor, y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x + (y + bias) with PyTorch's type promotion; without a bias, x + y."""
    return x + (y + bias if bias is not None else y)
