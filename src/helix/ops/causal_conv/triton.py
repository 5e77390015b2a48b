"""Triton kernels of :mod:`helix.ops.causal_conv` (imported only when Triton is there).

Reference: ``causal_conv1d_silu_reference`` in reference.py. Channel c has direction s = +1
(causal) or, with ``bidirectional`` and c >= C/2, s = -1 (anti-causal), so one launch serves both:

    pre[t] = bias + sum_j w_j x[t + s (j - (K-1))],    out[t] = silu(pre[t])

Forward, ``_conv_fwd``: per program a (BC channels, BT steps) tile.

Backward, two launches, since dx needs dpre = dout * silu'(pre) at K shifted positions:

* ``_conv_bwd_dpre``, per program one channel and NT tiles of BT steps: pre once per step (K tap
  loads, one sigmoid), dpre = dout * sig * (1 + pre (1 - sig)) stored in a (B, C, L) scratch (x's
  dtype when that is 16-bit, else fp32: :data:`DPRE_LOW_PRECISION`),
  dbias = sum_t dpre[t] and dweight_j = sum_t dpre[t] x[t + s (j - (K-1))] accumulated in
  registers and added with one relaxed fp32 atomic per (channel, tap) per program;
* ``_conv_bwd_dx``, per program one channel and BT steps: dx[t] = sum_r w_{K-1-r} dpre[t + s r]
  (dpre zero outside [0, L)), written in x's dtype.

The direction is a constexpr inside each backward program (a uniform branch), so tap offsets are
immediates and masks are per step, not per channel; interior spans of ``_conv_bwd_dpre`` run
unmasked. Global traffic of the backward per element: read x and dout, write and read dpre, write dx:
10 bytes in bf16 (14 with an fp32 scratch), 20 in fp32. Row offsets (b, c) are int64 (B*C*L may
exceed 2^31);
the backward keeps offsets along L int32 (one sequence is < 2^31 steps), the forward int64.

Variable lengths (``HAS_LEN``): row b is valid in [0, n_b) with n_b = lengths[b]. Every tap, dout
and dpre read treats positions past n_b as zero (so neither direction reads across the clip's end),
and out, dx are written as zero there; a program whose steps all lie past n_b loads nothing.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _pre(x_row, w_ptr, bias, c, q, s, L, mask_c, K: tl.constexpr):
    """Pre-activation at positions q (BC, BT): bias + sum_j w_j x[q + s (j - (K-1))]."""
    acc = bias[:, None] + tl.zeros(q.shape, dtype=tl.float32)
    for j in tl.static_range(K):
        pos = q + s[:, None] * (j - (K - 1))
        m = mask_c[:, None] & (pos >= 0) & (pos < L)
        w = tl.load(w_ptr + c * K + j, mask=mask_c, other=0.0)
        acc += w[:, None] * tl.load(x_row + pos, mask=m, other=0.0).to(tl.float32)
    return acc


@triton.jit
def _setup(C, HALF, BIDIR, BC: tl.constexpr, BT: tl.constexpr):
    t = tl.program_id(0).to(tl.int64) * BT + tl.arange(0, BT).to(tl.int64)
    c = tl.program_id(1).to(tl.int64) * BC + tl.arange(0, BC).to(tl.int64)
    b = tl.program_id(2).to(tl.int64)
    s = 1 - 2 * ((c >= HALF) & (BIDIR != 0)).to(tl.int64)  # +1 causal, -1 anti-causal
    return t, c, b, s, c < C


@triton.jit
def _valid_len(len_ptr, b, L, HAS_LEN: tl.constexpr):
    """Row b's valid steps: lengths[b], or L without lengths."""
    if HAS_LEN:
        n = tl.load(len_ptr + b).to(tl.int64)
    else:
        n = L
    return n


@triton.jit(do_not_specialize=["BIDIR"])
def _conv_fwd(x_ptr, w_ptr, b_ptr, len_ptr, out_ptr, C, L, HALF, BIDIR, sx_b, sx_c,
              K: tl.constexpr, BC: tl.constexpr, BT: tl.constexpr, HAS_LEN: tl.constexpr):
    t, c, b, s, mask_c = _setup(C, HALF, BIDIR, BC, BT)
    n_b = _valid_len(len_ptr, b, L, HAS_LEN)
    bias = tl.load(b_ptr + c, mask=mask_c, other=0.0)
    x_row = x_ptr + b * sx_b + c[:, None] * sx_c
    # taps past the clip's end read as zero (masked: a tile wholly past it loads nothing)
    pre = _pre(x_row, w_ptr, bias, c, t[None, :] + 0 * c[:, None], s, n_b, mask_c, K)
    out = tl.where((t < n_b)[None, :], pre * tl.sigmoid(pre), 0.0)
    mask = mask_c[:, None] & (t < L)[None, :]
    tl.store(out_ptr + (b * C + c[:, None]) * L + t[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _dpre_span(x_row, g_row, d_row, w_row, dw_row, bias, db_ptr, t0, L, NV, S: tl.constexpr, MASKED: tl.constexpr,
               K: tl.constexpr, KP: tl.constexpr, BT: tl.constexpr, NT: tl.constexpr):
    """One channel's steps [t0, t0 + NT BT) in NT tiles of BT; direction S = +1 / -1 is a constexpr.

    The K taps are a (KP, BT) tile: row j holds x[t + S (j - (K-1))], so pre is an in-thread sum over
    rows and the dweight partials accumulate per row; the cross-thread reduction runs once per call.
    MASKED=False is the interior: every tap of every step lies in [0, NV), no masks at all. NV <= L
    is the row's valid length: taps and dout past it read as zero, so dpre is zero there.
    """
    j = tl.arange(0, KP)
    tap = j < K
    shift = S * (j - (K - 1))
    w = tl.load(w_row + j, mask=tap, other=0.0)
    acc_x = tl.zeros((KP, BT), dtype=tl.float32)  # sum_t dpre[t] x[t + shift_j]
    acc_b = tl.zeros((BT,), dtype=tl.float32)
    for i in range(NT):
        t = t0 + i * BT + tl.arange(0, BT)
        pos = t[None, :] + shift[:, None]
        if MASKED:  # S > 0: taps at or before t, S < 0: at or after t
            if S > 0:
                xm = tap[:, None] & (pos >= 0) & (t < NV)[None, :]
            else:
                xm = tap[:, None] & (pos < NV)
            xs = tl.load(x_row + pos, mask=xm, other=0.0).to(tl.float32)
            g = tl.load(g_row + t, mask=t < NV, other=0.0).to(tl.float32)
        else:
            xs = tl.load(x_row + pos, mask=tap[:, None], other=0.0).to(tl.float32)
            g = tl.load(g_row + t).to(tl.float32)
        pre = bias + tl.sum(w[:, None] * xs, 0)
        sg = tl.sigmoid(pre)
        dpre = g * sg * (1.0 + pre * (1.0 - sg))  # 0 past NV: g is
        if MASKED:
            tl.store(d_row + t, dpre.to(d_row.dtype.element_ty), mask=t < L)
        else:
            tl.store(d_row + t, dpre.to(d_row.dtype.element_ty))
        acc_x += dpre[None, :] * xs
        acc_b += dpre
    tl.atomic_add(db_ptr, tl.sum(acc_b, 0), sem="relaxed")
    tl.atomic_add(dw_row + j, tl.sum(acc_x, 1), mask=tap, sem="relaxed")


# L and the strides unspecialised: offsets along L then carry no divisibility, so Triton gives every
# access one element per thread (a warp reads 32 consecutive steps) instead of 8-element vectors
# whose unaligned, shifted tap loads would be scalar loads spread over 4-8 cache lines per warp.
@triton.jit(do_not_specialize=["C", "L", "HALF", "BIDIR", "sx_b", "sx_c", "sg_b", "sg_c"])
def _conv_bwd_dpre(x_ptr, w_ptr, b_ptr, len_ptr, dout_ptr, dpre_ptr, dw_ptr, db_ptr, C, L, HALF, BIDIR,
                   sx_b, sx_c, sg_b, sg_c, K: tl.constexpr, KP: tl.constexpr, BT: tl.constexpr, NT: tl.constexpr,
                   HAS_LEN: tl.constexpr):
    """Grid (cdiv(L, NT BT), C, B): dpre into the (B, C, L) scratch, dbias and dweight by atomics."""
    t0 = tl.program_id(0) * (BT * NT)
    c = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2).to(tl.int64)
    x_row = x_ptr + b * sx_b + c * sx_c
    g_row = dout_ptr + b * sg_b + c * sg_c
    d_row = dpre_ptr + (b * C + c) * L
    bias = tl.load(b_ptr + c)
    nv = _valid_len(len_ptr, b, L, HAS_LEN)
    inner = (t0 >= K - 1) & (t0 + BT * NT + K - 1 <= nv)
    if (BIDIR != 0) & (c >= HALF):
        if inner:
            _dpre_span(x_row, g_row, d_row, w_ptr + c * K, dw_ptr + c * K, bias, db_ptr + c, t0, L, nv, -1, False, K, KP, BT, NT)
        else:
            _dpre_span(x_row, g_row, d_row, w_ptr + c * K, dw_ptr + c * K, bias, db_ptr + c, t0, L, nv, -1, True, K, KP, BT, NT)
    else:
        if inner:
            _dpre_span(x_row, g_row, d_row, w_ptr + c * K, dw_ptr + c * K, bias, db_ptr + c, t0, L, nv, 1, False, K, KP, BT, NT)
        else:
            _dpre_span(x_row, g_row, d_row, w_ptr + c * K, dw_ptr + c * K, bias, db_ptr + c, t0, L, nv, 1, True, K, KP, BT, NT)


@triton.jit
def _dx_span(d_row, dx_row, w_row, t, L, NV, S: tl.constexpr, K: tl.constexpr):
    """dx[t] = sum_r w_{K-1-r} dpre[t + S r], dpre zero outside [0, L); dx zero past NV (the clip's end)."""
    dx = tl.zeros(t.shape, dtype=tl.float32)
    for r in tl.static_range(K):
        q = t + S * r
        if S > 0:
            m = q < L
        else:
            m = (q >= 0) & (t < L)
        dx += tl.load(w_row + (K - 1 - r)) * tl.load(d_row + q, mask=m, other=0.0).to(tl.float32)
    dx = tl.where(t < NV, dx, 0.0)
    tl.store(dx_row + t, dx.to(dx_row.dtype.element_ty), mask=t < L)


@triton.jit(do_not_specialize=["C", "L", "HALF", "BIDIR"])  # unspecialised L: see _conv_bwd_dpre
def _conv_bwd_dx(dpre_ptr, w_ptr, len_ptr, dx_ptr, C, L, HALF, BIDIR, K: tl.constexpr, BT: tl.constexpr,
                 HAS_LEN: tl.constexpr):
    """Grid (cdiv(L, BT), C, B): dx (B, C, L) contiguous in x's dtype from the dpre scratch."""
    t = tl.program_id(0) * BT + tl.arange(0, BT)
    c = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2).to(tl.int64)
    row = b * C + c
    nv = _valid_len(len_ptr, b, L, HAS_LEN)
    if (BIDIR != 0) & (c >= HALF):
        _dx_span(dpre_ptr + row * L, dx_ptr + row * L, w_ptr + c * K, t, L, nv, -1, K)
    else:
        _dx_span(dpre_ptr + row * L, dx_ptr + row * L, w_ptr + c * K, t, L, nv, 1, K)


_BC, _BT = 4, 256  # forward tile (at most)
_DPRE_BT, _DPRE_NT = 512, 4  # backward: one program per channel and up to 2048 steps, in tiles of up to 512
_DX_BT = 1024
DPRE_LOW_PRECISION = True
"""dpre's scratch in x's dtype when that is 16-bit (else fp32): dx rounds to that dtype anyway, and
dweight, dbias sum the fp32 values in registers. 10 instead of 14 bytes per element in bf16."""


def _tile(L: int, cap: int) -> int:
    """Steps per tile: ``cap``, or the next power of two above L (at least 16) when that is smaller.

    Short clips (1 s raw is L = 100) would otherwise run mostly masked-off tiles: at L = 100 the
    backward's 2,048-step programs did ~20x the work needed, a tenth of a 1 s training step."""
    return min(cap, max(16, triton.next_power_of_2(L)))


def _fwd_warps(bt: int) -> int:
    """16 outputs per thread: on the H200 at B=8, C=1,024, L=30,000 the (4, 256) tile ran 0.43 ms over 2 warps
    against 0.52 ms over 4 (8 per thread); 16 per thread was the best of every shape tried (RESULTS.md
    section 17)."""
    return max(1, _BC * bt // 512)


def conv_tiles(L: int) -> tuple[int, int, int, int]:
    """(forward tile, dpre tile, dpre tiles per program, dx tile) for rows of L steps."""
    dpre_bt = _tile(L, _DPRE_BT)
    return _tile(L, _BT), dpre_bt, min(_DPRE_NT, triton.cdiv(L, dpre_bt)), _tile(L, _DX_BT)


def conv_forward(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, bidirectional: bool,
                 lengths: torch.Tensor | None = None) -> torch.Tensor:
    """silu(depthwise conv): x (B, C, L) with unit stride along L, w (C, K) and b (C,) fp32 contiguous;
    ``lengths`` (B,) int64 valid steps per row (None: all)."""
    Bsz, C, L = x.shape
    K = w.shape[1]
    out = torch.empty((Bsz, C, L), dtype=x.dtype, device=x.device)
    bt = conv_tiles(L)[0]
    grid = (triton.cdiv(L, bt), triton.cdiv(C, _BC), Bsz)
    _conv_fwd[grid](x, w, b, lengths if lengths is not None else b, out, C, L, C // 2, int(bidirectional),
                    x.stride(0), x.stride(1), K=K, BC=_BC, BT=bt, HAS_LEN=lengths is not None,
                    num_warps=_fwd_warps(bt))
    return out


def conv_backward(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, dout: torch.Tensor, bidirectional: bool,
                  lengths: torch.Tensor | None = None):
    """(dx in x's dtype, dw (C, K) fp32, db (C,) fp32) for :func:`conv_forward`'s arguments."""
    if dout.stride(-1) != 1:
        dout = dout.contiguous()
    Bsz, C, L = x.shape
    dw = torch.zeros_like(w)
    db = torch.zeros_like(b)
    K = w.shape[1]
    low = DPRE_LOW_PRECISION and x.element_size() < 4
    dpre = torch.empty((Bsz, C, L), dtype=x.dtype if low else torch.float32, device=x.device)
    _, dpre_bt, dpre_nt, dx_bt = conv_tiles(L)
    grid = (triton.cdiv(L, dpre_bt * dpre_nt), C, Bsz)
    lens = lengths if lengths is not None else b  # never read without HAS_LEN
    has_len = lengths is not None
    _conv_bwd_dpre[grid](x, w, b, lens, dout, dpre, dw, db, C, L, C // 2, int(bidirectional),
                         x.stride(0), x.stride(1), dout.stride(0), dout.stride(1),
                         K=K, KP=triton.next_power_of_2(K), BT=dpre_bt, NT=dpre_nt, HAS_LEN=has_len, num_warps=4)
    dx = torch.empty((Bsz, C, L), dtype=x.dtype, device=x.device)
    _conv_bwd_dx[(triton.cdiv(L, dx_bt), C, Bsz)](dpre, w, lens, dx, C, L, C // 2, int(bidirectional),
                                                   K=K, BT=dx_bt, HAS_LEN=has_len, num_warps=4)
    return dx, dw, db


class CausalConvFn(torch.autograd.Function):
    """x (B, C, L), weight (C, K), bias (C,) -> silu(causal depthwise conv), (B, C, L) contiguous."""

    @staticmethod
    def forward(ctx, x, weight, bias, bidirectional, lengths=None):
        if x.stride(-1) != 1:
            x = x.contiguous()
        C, K = x.shape[1], weight.shape[-1]
        w = weight.reshape(C, K).float().contiguous()
        b = bias.float().contiguous() if bias is not None else torch.zeros(C, device=x.device)
        lengths = lengths.to(device=x.device, dtype=torch.int64).contiguous() if lengths is not None else None
        out = conv_forward(x, w, b, bidirectional, lengths)
        ctx.save_for_backward(x, w, b, lengths)
        ctx.meta = (bidirectional, weight.shape, weight.dtype, bias is not None, bias.dtype if bias is not None else None)
        return out

    @staticmethod
    def backward(ctx, dout):
        x, w, b, lengths = ctx.saved_tensors
        bidirectional, w_shape, w_dtype, has_bias, b_dtype = ctx.meta
        dx, dw, db = conv_backward(x, w, b, dout, bidirectional, lengths)
        return dx, dw.reshape(w_shape).to(w_dtype), db.to(b_dtype) if has_bias else None, None, None
