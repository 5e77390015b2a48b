"""x + (y + bias) in one pass (the BiMamba block's output into the residual stream).

As two PyTorch ops, ``y + bias`` (bf16 plus a broadcast fp32 vector, written as fp32) ran in PyTorch's
generic, unvectorised elementwise kernel: 0.27 ms per block at 300 s (B=8, 240,000 rows of 256) on the
H200, plus 0.14 ms for adding the stream (RESULTS.md section 20's profile). Here one kernel reads x and y
once and writes the sum. The backward passes the gradient to x as it is; y's (cast to y's dtype) and the
bias's (summed over rows) come from one kernel that reads the fp32 gradient once (``_residual_bwd``: each
program walks several row blocks and keeps a (rows, D) partial sum, summed once at the end, as the
LayerNorm's backward does), where PyTorch read it twice, once for the cast and once, at ~1.7 TB/s, for
the sum (0.27 ms per block at 300 s, B=8, on the H200).
Reference: :func:`helix.ops.residual.reference.add_bias_residual_reference`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from helix.ops.backend import partial_sum_grid, row_tile

TILE = 4096  # elements per program: 16 rows of D = 256
BWD_PROGRAMS = 512  # the backward's programs at most (so at most 512 partial rows to sum), as the LayerNorm's


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


@triton.jit
def _residual_bwd(g_ptr, dy_ptr, db_ptr, M, D, blocks_per_program, HAS_BIAS: tl.constexpr, ROWS: tl.constexpr,
                  BLOCK_D: tl.constexpr):
    """dy = g in dy's dtype; this program's rows' sum of g into its own row of the bias partials."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_D)
    mask_c = cols < D
    db = tl.zeros([ROWS, BLOCK_D], tl.float32)  # summed over rows once, after the loop
    for i in range(blocks_per_program):
        rows = (pid.to(tl.int64) * blocks_per_program + i) * ROWS + tl.arange(0, ROWS)
        mask = (rows < M)[:, None] & mask_c[None, :]
        off = rows[:, None] * D + cols[None, :]
        g = tl.load(g_ptr + off, mask=mask, other=0.0)
        tl.store(dy_ptr + off, g.to(dy_ptr.dtype.element_ty, fp_downcast_rounding="rtne"), mask=mask)
        db += g
    if HAS_BIAS:
        tl.store(db_ptr + pid * D + cols, tl.sum(db, 0), mask=mask_c)


def add_bias_residual_backward(g: torch.Tensor, y_dtype: torch.dtype, bias: bool):
    """g (M, D) fp32 contiguous, M > 0 -> (g in ``y_dtype``, g summed over rows (D,) fp32 or None)."""
    M, D = g.shape
    rows, block_d = row_tile(D, TILE)
    per_program, programs = partial_sum_grid(M, rows, BWD_PROGRAMS)
    dy = torch.empty((M, D), dtype=y_dtype, device=g.device)
    db = torch.empty((programs, D), dtype=torch.float32, device=g.device) if bias else g
    _residual_bwd[(programs,)](g, dy, db, M, D, per_program, HAS_BIAS=bias, ROWS=rows, BLOCK_D=block_d,
                               num_warps=4)
    return dy, db.sum(0) if bias else None


def add_bias_residual_forward(x: torch.Tensor, y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (M, D) fp32, y (M, D), bias (D,) fp32 or None, all contiguous -> x + (y + bias) (M, D) fp32."""
    M, D = x.shape
    out = torch.empty_like(x)
    if M:
        rows, block_d = row_tile(D, TILE)
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
        need_y, need_bias = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        if need_y and ctx.y_dtype != g.dtype and g.dtype == torch.float32 and g.is_contiguous() and g.numel():
            dy, dbias = add_bias_residual_backward(g.view(-1, g.shape[-1]), ctx.y_dtype, need_bias)
            dy = dy.view(g.shape)
        else:  # y fp32 (its gradient is g itself), or a gradient the kernel does not take
            dy = g.to(ctx.y_dtype) if need_y else None
            dbias = g.reshape(-1, g.shape[-1]).sum(0) if need_bias else None
        return g if ctx.needs_input_grad[0] else None, dy, dbias


def add_bias_residual_triton(x: torch.Tensor, y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """:func:`helix.ops.residual.reference.add_bias_residual_reference` with the kernel above (x, y
    contiguous of one shape, x and the bias fp32)."""
    return AddBiasResidualFn.apply(x, y, bias)
