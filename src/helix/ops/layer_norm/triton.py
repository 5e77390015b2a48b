"""LayerNorm in Triton, several rows per program, the output written in the compute dtype.

At 300 s (B=8, 240,000 rows of D = 256) PyTorch's LayerNorm plus the cast of its fp32 output to bf16
took 0.495 ms forward on the H200, this 0.092 ms (``benchmarks/bench_layer_norm.py``, RESULTS.md
section 20). Here a program normalises ``TILE`` elements' worth of rows at once (16 at D = 256) and
writes bf16 directly;
the backward computes dx in one pass and the weight and bias gradients as per-program partial sums
(each program walks several row blocks, so there are few partials), summed by one small reduction.
``layer_norm_residual_triton`` also hands x on (the residual stream past the block): its backward adds
that path's gradient into dx in the same pass, where autograd would add the two with a separate kernel
(a read of two and a write of one (B, L, D) fp32 tensor per block: 0.17 ms at 300 s, B=8, on the H200).
Reference: :func:`helix.ops.layer_norm.reference.layer_norm_reference`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from helix.ops.backend import partial_sum_grid, row_tile

SAVE_XHAT = True
"""A 16-bit norm of a wider x (the blocks' pre-norms: bf16 out of the fp32 stream) saves xhat in fp16 for its
backward rather than x: 2 instead of 4 bytes per element (0.12 GB per block at 300 s, B=8). |xhat| <= sqrt(D)
fits fp16's range, and its 11 significant bits put dweight ~2e-4 off float64 as a whole (bf16: 8x coarser)."""
TILE = 4096  # elements per program and per backward step: 16 rows of D = 256 (the measured width)
BWD_PROGRAMS = 512  # backward programs at most, each summing its rows' dw, db (fastest of 512-16384 on the H200)


@triton.jit
def _ln_fwd(x_ptr, w_ptr, b_ptr, y_ptr, mean_ptr, rstd_ptr, xhat_ptr, M, D, eps,
            ROWS: tl.constexpr, BLOCK_D: tl.constexpr, XHAT: tl.constexpr = False):
    """y = xhat w + b; mean and rstd per row, and with ``XHAT`` xhat itself (for the backward)."""
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_D)
    mask_r = rows < M
    mask_c = cols < D
    mask = mask_r[:, None] & mask_c[None, :]
    off = rows[:, None] * D + cols[None, :]
    x = tl.load(x_ptr + off, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, 1) / D
    xc = tl.where(mask, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, 1) / D + eps)
    w = tl.load(w_ptr + cols, mask=mask_c, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=mask_c, other=0.0).to(tl.float32)
    xhat = xc * rstd[:, None]
    y = xhat * w[None, :] + b[None, :]
    tl.store(y_ptr + off, y.to(y_ptr.dtype.element_ty), mask=mask)
    if XHAT:
        tl.store(xhat_ptr + off, xhat.to(xhat_ptr.dtype.element_ty), mask=mask)
    tl.store(mean_ptr + rows, mean, mask=mask_r)
    tl.store(rstd_ptr + rows, rstd, mask=mask_r)


@triton.jit
def _ln_bwd(x_ptr, w_ptr, dy_ptr, mean_ptr, rstd_ptr, dx_ptr, dw_ptr, db_ptr, res_ptr, M, D, blocks_per_program,
            ROWS: tl.constexpr, BLOCK_D: tl.constexpr, HAS_RES: tl.constexpr = False, XHAT: tl.constexpr = False):
    """dx = rstd (w dy - mean_D(w dy) - xhat mean_D(xhat w dy)) (+ the residual path's gradient, fp32, with
    ``HAS_RES``); this program's rows' sums of dy xhat (dw) and dy (db) into its own row of the partials.
    With ``XHAT``, x_ptr holds xhat (the forward's) and mean_ptr is not read."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_D)
    mask_c = cols < D
    w = tl.load(w_ptr + cols, mask=mask_c, other=0.0).to(tl.float32)
    dw = tl.zeros([ROWS, BLOCK_D], tl.float32)  # summed over rows once, after the loop
    db = tl.zeros([ROWS, BLOCK_D], tl.float32)
    for i in range(blocks_per_program):
        rows = (pid.to(tl.int64) * blocks_per_program + i) * ROWS + tl.arange(0, ROWS)
        mask_r = rows < M
        mask = mask_r[:, None] & mask_c[None, :]
        off = rows[:, None] * D + cols[None, :]
        x = tl.load(x_ptr + off, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + off, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + rows, mask=mask_r, other=0.0)
        if XHAT:
            xhat = x
        else:
            mean = tl.load(mean_ptr + rows, mask=mask_r, other=0.0)
            xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
        wdy = w[None, :] * dy
        c1 = tl.sum(xhat * wdy, 1) / D
        c2 = tl.sum(wdy, 1) / D
        dx = (wdy - xhat * c1[:, None] - c2[:, None]) * rstd[:, None]
        if HAS_RES:
            dx += tl.load(res_ptr + off, mask=mask, other=0.0)
        tl.store(dx_ptr + off, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        dw += dy * xhat
        db += dy
    tl.store(dw_ptr + pid * D + cols, tl.sum(dw, 0), mask=mask_c)
    tl.store(db_ptr + pid * D + cols, tl.sum(db, 0), mask=mask_c)


def _block_d(D: int) -> int:
    return row_tile(D, TILE)[1]


def _rows(D: int) -> int:
    """Rows per program (and per backward step) for rows of D elements."""
    return row_tile(D, TILE)[0]


def saves_xhat(x: torch.Tensor, out_dtype: torch.dtype) -> bool:
    """Whether the backward gets xhat in fp16 rather than x: for a 16-bit output of a wider x (the blocks'
    pre-norms under autocast: bf16 out of the fp32 stream), when :data:`SAVE_XHAT` is on."""
    return SAVE_XHAT and out_dtype.itemsize == 2 and x.element_size() > 2


def layer_norm_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                       out_dtype: torch.dtype, xhat: bool = False
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """x (M, D) contiguous -> y (M, D) in ``out_dtype``, mean and rstd (M,) in fp32, and with ``xhat`` the
    normalised x (M, D) in fp16 (else None)."""
    M, D = x.shape
    y = torch.empty((M, D), dtype=out_dtype, device=x.device)
    mean = torch.empty((M,), dtype=torch.float32, device=x.device)
    rstd = torch.empty((M,), dtype=torch.float32, device=x.device)
    xh = torch.empty((M, D), dtype=torch.float16, device=x.device) if xhat else None
    if M:
        rows = _rows(D)
        _ln_fwd[(triton.cdiv(M, rows),)](x, weight, bias, y, mean, rstd, xh if xhat else y, M, D, eps,
                                          ROWS=rows, BLOCK_D=_block_d(D), XHAT=xhat, num_warps=4)
    return y, mean, rstd, xh


def layer_norm_backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, mean: torch.Tensor | None,
                        rstd: torch.Tensor, res: torch.Tensor | None = None, dx_dtype: torch.dtype | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dy (M, D) contiguous -> dx (M, D) in ``dx_dtype`` (None: x's), dweight and dbias (D,) in fp32;
    ``res`` (M, D) fp32 contiguous is added to dx (the gradient of x's other path). ``mean`` None: x is
    the forward's xhat (:func:`layer_norm_forward` with ``xhat``)."""
    M, D = x.shape
    dx = torch.empty_like(x, dtype=dx_dtype or x.dtype)
    if not M:
        return dx, torch.zeros(D, dtype=torch.float32, device=x.device), torch.zeros_like(weight, dtype=torch.float32)
    rows = _rows(D)
    per_program, programs = partial_sum_grid(M, rows, BWD_PROGRAMS)
    dw = torch.empty((programs, D), dtype=torch.float32, device=x.device)
    db = torch.empty((programs, D), dtype=torch.float32, device=x.device)
    _ln_bwd[(programs,)](x, weight, dy, mean if mean is not None else rstd, rstd, dx, dw, db,
                         res if res is not None else dy, M, D, per_program, ROWS=rows, BLOCK_D=_block_d(D),
                         HAS_RES=res is not None, XHAT=mean is None, num_warps=4)
    return dx, dw.sum(0), db.sum(0)


class LayerNormFn(torch.autograd.Function):
    """x (..., D) -> LayerNorm(x) as ``out_dtype``; gradients for x (its dtype), weight and bias (fp32)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, out_dtype):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).contiguous()
        xhat = saves_xhat(x2, out_dtype) and any(ctx.needs_input_grad[:3])
        y, mean, rstd, xh = layer_norm_forward(x2, weight.contiguous(), bias.contiguous(), eps, out_dtype, xhat)
        if xhat:  # half x's bytes: fp16 xhat (|xhat| <= sqrt(D), 11 significant bits) instead of the fp32 x
            ctx.save_for_backward(xh, weight, rstd)
        else:
            ctx.save_for_backward(x2, weight, mean, rstd)
        ctx.shape, ctx.x_dtype = shape, x.dtype
        return y.view(shape)

    @staticmethod
    def backward(ctx, dy, res=None):
        """``res``: the gradient of x's other path, added to dx in the same pass (:class:`LayerNormResidualFn`)."""
        saved = ctx.saved_tensors
        x2, weight, rstd = saved[0], saved[1], saved[-1]
        mean = saved[2] if len(saved) == 4 else None
        if res is not None:
            res = res.float().reshape(x2.shape).contiguous()
        dx, dw, db = layer_norm_backward(dy.reshape(x2.shape).contiguous(), x2, weight.contiguous(), mean, rstd, res,
                                         ctx.x_dtype)
        return dx.view(ctx.shape), dw.to(weight.dtype), db.to(weight.dtype), None, None


class LayerNormResidualFn(torch.autograd.Function):
    """x (..., D) -> (LayerNorm(x) as ``out_dtype``, x): the second output is x itself for the residual
    path, so both of x's gradients reach this backward, which adds them in the LayerNorm's dx pass."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, out_dtype):
        y = LayerNormFn.forward(ctx, x, weight, bias, eps, out_dtype)
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None (no zeros to add)
        return y, x.view_as(x)

    @staticmethod
    def backward(ctx, dy, dres):
        if dy is None:  # only the residual path was used
            return dres, None, None, None, None
        return LayerNormFn.backward(ctx, dy, dres)


def layer_norm_residual_triton(x, weight, bias, eps, out_dtype):
    """(:func:`layer_norm_triton` (x), x) with both of x's gradients added in one backward pass."""
    return LayerNormResidualFn.apply(x, weight, bias, eps, out_dtype)


def layer_norm_triton(x, weight, bias, eps, out_dtype):
    """:func:`helix.ops.layer_norm.reference.layer_norm_reference` with the kernels above."""
    return LayerNormFn.apply(x, weight, bias, eps, out_dtype)
