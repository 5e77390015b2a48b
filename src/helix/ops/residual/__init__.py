"""A block's output, plus its projection's bias, added to the residual stream: ``x + (y + bias)``.

``add_bias_residual(x, y, bias)``: the Triton kernel (:mod:`.triton`) for contiguous CUDA tensors of
at least :data:`MIN_ROWS` rows, an fp32 stream and bias, when Triton imports and no compiler or tracer
is recording; else the reference (:mod:`.reference`), which computes the same sums in the same order.
"""

from __future__ import annotations

import torch

from helix.ops.backend import EAGER_MIN_ROWS, eager_row_kernel_applies, load_kernels
from helix.ops.residual.reference import add_bias_residual_reference

__all__ = ["MIN_ROWS", "add_bias_residual", "add_bias_residual_reference", "kernel_applies"]

MIN_ROWS = EAGER_MIN_ROWS
"""Fewer rows keep PyTorch's two ops (``ops.backend.EAGER_MIN_ROWS``: an eager Triton launch costs more
host time than short steps would gain)."""


def kernel_applies(x: torch.Tensor, y: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether :func:`add_bias_residual` runs the kernel for these tensors."""
    if not (x.dtype == torch.float32 and y.shape == x.shape and y.device == x.device
            and y.dtype in (torch.float32, torch.bfloat16, torch.float16) and x.is_contiguous() and y.is_contiguous()):
        return False
    if bias is not None and not (bias.dtype == torch.float32 and bias.shape == x.shape[-1:] and bias.is_contiguous()):
        return False
    return eager_row_kernel_applies(x)


def add_bias_residual(x: torch.Tensor, y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (..., D) + (y (..., D) + bias (D,)): the residual stream plus a block's output and bias."""
    if kernel_applies(x, y, bias):
        return load_kernels("residual.triton").add_bias_residual_triton(x, y, bias)
    return add_bias_residual_reference(x, y, bias)
