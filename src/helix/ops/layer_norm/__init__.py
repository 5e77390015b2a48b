"""LayerNorm over the last axis with its output in a chosen dtype (the blocks' pre-norms).

``layer_norm(x, weight, bias, eps, out_dtype)``: the Triton kernels (:mod:`.triton`) for CUDA tensors of
at least :data:`MIN_ROWS` rows of at most :data:`MAX_D` elements when Triton imports and no compiler or
tracer is recording, else the
reference (:mod:`.reference`: ``nn.LayerNorm`` under autocast plus a cast). ``apply_norm(norm, x)`` runs
an ``nn.LayerNorm`` module the same way, and exactly as the module itself where the kernels do not apply.
"""

from __future__ import annotations

import math

import torch

from helix.ops.backend import EAGER_MIN_ROWS, eager_row_kernel_applies, load_kernels
from helix.ops.layer_norm.reference import layer_norm_reference

__all__ = ["MAX_D", "MIN_ROWS", "apply_norm", "apply_norm_residual", "kernels_apply", "layer_norm",
           "layer_norm_reference", "sizes_apply"]

MIN_ROWS = EAGER_MIN_ROWS
"""Fewer rows keep PyTorch's kernel (``ops.backend.EAGER_MIN_ROWS``: an eager launch of the Triton path
costs more host time than short steps would gain)."""
MAX_D = 256
"""Wider rows keep PyTorch's kernel: the Triton one was measured at D = 256 (the paper's width) only."""


def sizes_apply(shape: tuple[int, ...]) -> bool:
    """Whether rows of this (..., D) shape are many and narrow enough for the kernels."""
    if not shape or shape[-1] <= 0:
        return False
    return math.prod(shape[:-1]) >= MIN_ROWS and shape[-1] <= MAX_D


def kernels_apply(x: torch.Tensor) -> bool:
    """Whether :func:`layer_norm` runs the Triton kernels for ``x`` (..., D)."""
    return sizes_apply(tuple(x.shape)) and eager_row_kernel_applies(x)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
               out_dtype: torch.dtype) -> torch.Tensor:
    """x (..., D), weight and bias (D,) -> (..., D) in ``out_dtype``, normalised in fp32."""
    if kernels_apply(x):
        return load_kernels("layer_norm.triton").layer_norm_triton(x, weight, bias, eps, out_dtype)
    return layer_norm_reference(x, weight, bias, eps, out_dtype)


def apply_norm(norm: torch.nn.LayerNorm, x: torch.Tensor, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``norm(x)``, as ``out_dtype`` if given (None: the module's own, fp32 under autocast); through the
    kernels where they apply (an affine norm over the last axis), else the module itself."""
    if kernels_apply(x) and norm.weight is not None and norm.bias is not None and len(norm.normalized_shape) == 1:
        if out_dtype is None:
            out_dtype = torch.float32 if torch.is_autocast_enabled(x.device.type) else x.dtype
        return load_kernels("layer_norm.triton").layer_norm_triton(x, norm.weight, norm.bias, norm.eps, out_dtype)
    y = norm(x)
    return y if out_dtype is None else y.to(out_dtype)


def apply_norm_residual(norm: torch.nn.LayerNorm, x: torch.Tensor,
                        out_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(``apply_norm(norm, x, out_dtype)``, x): for a pre-norm block ``x + f(norm(x))``, which should add f's
    output to the returned x. Where the kernels apply, x comes back through the norm's autograd function,
    so its backward adds the residual path's gradient to dx in its own pass (no separate kernel adding
    the two); elsewhere x is returned as it is."""
    if kernels_apply(x) and norm.weight is not None and norm.bias is not None and len(norm.normalized_shape) == 1:
        if out_dtype is None:
            out_dtype = torch.float32 if torch.is_autocast_enabled(x.device.type) else x.dtype
        return load_kernels("layer_norm.triton").layer_norm_residual_triton(x, norm.weight, norm.bias, norm.eps,
                                                                            out_dtype)
    return apply_norm(norm, x, out_dtype), x
