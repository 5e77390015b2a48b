"""x + (y + bias) in one pass (the BiMamba block's output into the residual stream).

As two PyTorch ops, ``y + bias`` (bf16 plus a broadcast fp32 vector, written as fp32) ran in PyTorch's
generic, unvectorised elementwise kernel: 0.27 ms per block at 300 s (B=8, 240,000 rows of 256) on the
H200, plus 0.14 ms for adding the stream (RESULTS.md section 20's profile). Here one kernel reads x and y
once and writes the sum. The backward is PyTorch's (the gradient passes to x, cast to y's dtype for y,
summed over rows for the bias), as autograd composed it before.
Reference: :func:`helix.ops.residual.reference.add_bias_residual_reference`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

TILE = 4096  # elements per program: 16 rows of D = 256


@triton.jit
def _add_bias_residual(x_ptr, y_ptr, b_ptr, out_ptr, M, D, HAS_BIAS: tl.constexpr, ROWS: tl.constexpr,
                       BLOCK_D: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_D)
    mask_c = cols < D
    mask = (rows < M)[:, None] & mask_c[None, :]
    off = rows[:, None] * D + cols[None, :]
    y = tl.load(y_ptr + off, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        y = y + tl.load(b_ptr + cols, mask=mask_c, other=0.0)[None, :]
    x = tl.load(x_ptr + off, mask=mask, other=0.0)
    tl.store(out_ptr + off, x + y, mask=mask)


def add_bias_residual_forward(x: torch.Tensor, y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (M, D) fp32, y (M, D), bias (D,) fp32 or None, all contiguous -> x + (y + bias) (M, D) fp32."""
    M, D = x.shape
    out = torch.empty_like(x)
    if M:
        block_d = max(triton.next_power_of_2(D), 16)
        rows = max(TILE // block_d, 1)
        _add_bias_residual[(triton.cdiv(M, rows),)](x, y, bias if bias is not None else x, out, M, D,
                                                    HAS_BIAS=bias is not None, ROWS=rows, BLOCK_D=block_d,
                                                    num_warps=4)
    return out


class AddBiasResidualFn(torch.autograd.Function):
    """x + (y + bias); gradients: x's as given, y's cast to y's dtype, the bias's summed over rows."""

    @staticmethod
    def forward(ctx, x, y, bias):
        D = x.shape[-1]
        out = add_bias_residual_forward(x.reshape(-1, D), y.reshape(-1, D), bias)
        ctx.y_dtype = y.dtype
        return out.view(x.shape)

    @staticmethod
    def backward(ctx, g):
        dy = g.to(ctx.y_dtype) if ctx.needs_input_grad[1] else None
        dbias = g.reshape(-1, g.shape[-1]).sum(0) if ctx.needs_input_grad[2] else None
        return g if ctx.needs_input_grad[0] else None, dy, dbias


def add_bias_residual_triton(x: torch.Tensor, y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """:func:`helix.ops.residual.reference.add_bias_residual_reference` with the kernel above (x, y
    contiguous of one shape, x and the bias fp32)."""
    return AddBiasResidualFn.apply(x, y, bias)
