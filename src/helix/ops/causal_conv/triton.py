"""Triton kernels of :mod:`helix.ops.causal_conv` (imported only when Triton is there).

Reference: ``causal_conv1d_silu_reference`` in reference.py. Channel c has direction s = +1
(causal) or, with ``bidirectional`` and c >= C/2, s = -1 (anti-causal), so one launch serves both:

    pre[t] = bias + sum_j w_j x[t + s (j - (K-1))],    out[t] = silu(pre[t])

Forward, ``_conv_fwd``: per program a (BC channels, BT steps) tile. On rows aligned to 8 steps, a tile
of one direction whose taps all lie inside the row (all but a row's first and last at L = 30,000)
loads each thread's groups of 8 steps and a 4-step halo per group as aligned vectors and slices the
K shifted taps out of registers (``_fwd_groups_tile``); the rest go through ``_fwd_taps_tile``, K
masked loads per step, which is all of ``_conv_fwd_taps`` (:data:`FWD_GROUPS` = False: the kernel
before, kept for A/B). Both give the same bits. Offline SASS (benchmarks/conv_sass.py, Triton 3.6,
sm_90, B=8, C=1,024, L=30,000 bf16): per thread of a (4, 256) tile, 2 warps, the groups path issues
4 16-byte loads, 2 8-byte ones, 2 scalar ones (bias) and 2 16-byte stores in 344-368 instructions,
the taps kernel 32 2-byte and 18 4-byte loads besides its 2 16-byte ones in 728.

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
the backward and the forward's groups keep offsets along L int32 (one sequence is < 2^31 steps), the
forward's taps code int64.

Variable lengths (``HAS_LEN``): row b is valid in [0, n_b) with n_b = lengths[b]. Every tap, dout
and dpre read treats positions past n_b as zero (so neither direction reads across the clip's end),
and out, dx are written as zero there; a program whose steps all lie past n_b loads nothing.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice


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
def _setup(C, HALF, BIDIR, t0, BC: tl.constexpr, BT: tl.constexpr):
    t = t0 + tl.arange(0, BT).to(tl.int64)
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


@triton.jit
def _fwd_taps_tile(x_ptr, w_ptr, b_ptr, out_ptr, C, L, HALF, BIDIR, sx_b, sx_c, n_b, t0,
                   K: tl.constexpr, BC: tl.constexpr, BT: tl.constexpr):
    """Steps [t0, t0 + BT) (t0 int64) of BC channels, any direction per channel and any position in the
    row: K masked tap loads."""
    t, c, b, s, mask_c = _setup(C, HALF, BIDIR, t0, BC, BT)
    bias = tl.load(b_ptr + c, mask=mask_c, other=0.0)
    x_row = x_ptr + b * sx_b + c[:, None] * sx_c
    # taps past the clip's end read as zero (masked: a tile wholly past it loads nothing)
    pre = _pre(x_row, w_ptr, bias, c, t[None, :] + 0 * c[:, None], s, n_b, mask_c, K)
    out = tl.where((t < n_b)[None, :], pre * tl.sigmoid(pre), 0.0)
    mask = mask_c[:, None] & (t < L)[None, :]
    tl.store(out_ptr + (b * C + c[:, None]) * L + t[None, :], out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["BIDIR"])
def _conv_fwd_taps(x_ptr, w_ptr, b_ptr, len_ptr, out_ptr, C, L, HALF, BIDIR, sx_b, sx_c,
                   K: tl.constexpr, BC: tl.constexpr, BT: tl.constexpr, HAS_LEN: tl.constexpr):
    """The forward before the in-register taps (:data:`FWD_GROUPS` = False): every tile through
    :func:`_fwd_taps_tile`. Specialised on L and the strides, its aligned tap is one 16-byte load per
    8 steps but the K-1 shifted ones compile to scalar loads over several cache lines per warp."""
    n_b = _valid_len(len_ptr, tl.program_id(2).to(tl.int64), L, HAS_LEN)
    t0 = tl.program_id(0).to(tl.int64) * BT
    _fwd_taps_tile(x_ptr, w_ptr, b_ptr, out_ptr, C, L, HALF, BIDIR, sx_b, sx_c, n_b, t0, K, BC, BT)


@triton.jit
def _unpack4(v, G: tl.constexpr, BC: tl.constexpr):
    """(G, BC, 4) -> its 4 (G, BC) slices along the last axis, in order (register moves where that axis
    lies inside each thread: the split of its even and odd elements, then of each pair)."""
    a, b = tl.split(tl.reshape(v, (G, BC, 2, 2)))  # elements 0, 2 and 1, 3
    v0, v2 = tl.split(a)
    v1, v3 = tl.split(b)
    return v0, v1, v2, v3


@triton.jit
def _unpack8(v, G: tl.constexpr, BC: tl.constexpr):
    """(G, BC, 8) -> its 8 (G, BC) slices along the last axis, in order."""
    a, b = tl.split(tl.reshape(v, (G, BC, 4, 2)))  # even (0, 2, 4, 6) and odd elements
    v0, v2, v4, v6 = _unpack4(a, G, BC)
    v1, v3, v5, v7 = _unpack4(b, G, BC)
    return v0, v1, v2, v3, v4, v5, v6, v7


@triton.jit
def _pack4(v0, v1, v2, v3, G: tl.constexpr, BC: tl.constexpr):
    """:func:`_unpack4`'s inverse: 4 (G, BC) tensors -> (G, BC, 4)."""
    return tl.reshape(tl.join(tl.join(v0, v2), tl.join(v1, v3)), (G, BC, 4))


@triton.jit
def _pack8(v0, v1, v2, v3, v4, v5, v6, v7, G: tl.constexpr, BC: tl.constexpr):
    """:func:`_unpack8`'s inverse: 8 (G, BC) tensors -> (G, BC, 8)."""
    return tl.reshape(tl.join(_pack4(v0, v2, v4, v6, G, BC), _pack4(v1, v3, v5, v7, G, BC)), (G, BC, 8))


@triton.jit
def _group_out(xs, w, bias, i: tl.constexpr, S: tl.constexpr, K: tl.constexpr, dt: tl.constexpr):
    """silu(pre) at step i of a group, in dt: xs holds the 12 steps of the group and its halo (steps -4..7
    for S = +1, 0..11 for S = -1), w the weights. Same sums in the same order as :func:`_pre`, so the
    outputs equal :func:`_fwd_taps_tile`'s bit for bit."""
    OFF: tl.constexpr = 4 if S > 0 else 0
    acc = bias.to(tl.float32) + 0.0
    for j in tl.static_range(K):
        acc += w[j] * xs[OFF + i + S * (j - (K - 1))].to(tl.float32)
    return _silu(acc).to(dt)


_EX2_FTZ = tl.constexpr(os.environ.get("TRITON_INTERPRET") != "1")


@triton.jit
def _silu(pre):
    """``pre * tl.sigmoid(pre)`` bit for bit in 4 fewer instructions per element (offline SASS, sm_90).
    ``tl.sigmoid`` computes 1 / (1 + ex2.approx((0 - pre) * log2(e))): here ex2.approx.ftz, whose
    results below 2^-126 are zero where ex2.approx's guards (an FSETP and two predicated FMULs) keep
    them, and pre times -log2(e), which differs from (0 - pre) log2(e) only in the sign of a zero (an
    FADD fewer). Both meet 1 + e, where e = ex2(+-0) = 1 and e < 2^-126 rounds to 1 either way. The
    interpreter computes libdevice's exp2 differently from exp, so there this is ``tl.sigmoid``."""
    if _EX2_FTZ:
        return pre * (1 / (1 + libdevice.exp2(pre * -1.4426950408889634)))
    else:
        return pre * tl.sigmoid(pre)


@triton.jit
def _fwd_groups_tile(x_ptr, w_ptr, b_ptr, out_ptr, C, L, sx_b, sx_c, t0, S: tl.constexpr,
                     K: tl.constexpr, BC: tl.constexpr, BT: tl.constexpr):
    """Steps [t0, t0 + BT) of BC channels of direction S whose taps all lie inside the row's valid steps
    (no masks along L); rows 8-step aligned (L, sx_b, sx_c multiples of 8: :func:`_conv_fwd`).

    Each thread holds whole groups of 8 consecutive steps, (BT // 8, BC, 8) with the 8 in-thread: x is one
    aligned vector load per group (two of 4 steps for 4-byte dtypes: the widest load is 16 bytes), plus
    an aligned 4-step halo (the 4 steps before the group for S = +1, after it for S = -1); the shifted
    taps are register slices of the two. The group axis leads the tile: Triton orders a load's threads
    by the pointer's contiguity, ties to the lower axis, so the 32 lanes of a warp take 32 consecutive
    groups of one channel and every slice has one layout (no conversions; benchmarks/conv_sass.py)."""
    G: tl.constexpr = BT // 8
    HALVES: tl.constexpr = x_ptr.dtype.element_ty.primitive_bitwidth > 16
    c = tl.program_id(1).to(tl.int64) * BC + tl.arange(0, BC).to(tl.int64)
    b = tl.program_id(2).to(tl.int64)
    mask_c = (c < C)[None, :, None]
    g = t0 + 8 * tl.arange(0, G)[:, None, None]  # first step of each group
    j4 = tl.arange(0, 4)[None, None, :]
    x_row = x_ptr + b * sx_b + c[None, :, None] * sx_c + g
    if HALVES:
        e0, e1, e2, e3 = _unpack4(tl.load(x_row + j4, mask=mask_c, other=0.0), G, BC)
        e4, e5, e6, e7 = _unpack4(tl.load(x_row + 4 + j4, mask=mask_c, other=0.0), G, BC)
    else:
        e0, e1, e2, e3, e4, e5, e6, e7 = _unpack8(
            tl.load(x_row + tl.arange(0, 8)[None, None, :], mask=mask_c, other=0.0), G, BC)
    h0, h1, h2, h3 = _unpack4(tl.load(x_row + (-4 if S > 0 else 8) + j4, mask=mask_c, other=0.0), G, BC)
    if S > 0:
        xs = (h0, h1, h2, h3, e0, e1, e2, e3, e4, e5, e6, e7)
    else:
        xs = (e0, e1, e2, e3, e4, e5, e6, e7, h0, h1, h2, h3)
    # the weights as a (G, BC, 4) tile too: one vector load of each channel's K weights per thread, and
    # the slices have the x slices' layout
    w_rows = w_ptr + c[None, :, None] * K + j4 + 0 * g
    if K == 4:
        w = _unpack4(tl.load(w_rows, mask=mask_c, other=0.0), G, BC)
    else:
        w = _unpack4(tl.load(w_rows, mask=mask_c & (j4 < K), other=0.0), G, BC)
    bias = tl.load(b_ptr + c, mask=c < C, other=0.0)[None, :]
    dt: tl.constexpr = out_ptr.dtype.element_ty
    o0, o1 = _group_out(xs, w, bias, 0, S, K, dt), _group_out(xs, w, bias, 1, S, K, dt)
    o2, o3 = _group_out(xs, w, bias, 2, S, K, dt), _group_out(xs, w, bias, 3, S, K, dt)
    o4, o5 = _group_out(xs, w, bias, 4, S, K, dt), _group_out(xs, w, bias, 5, S, K, dt)
    o6, o7 = _group_out(xs, w, bias, 6, S, K, dt), _group_out(xs, w, bias, 7, S, K, dt)
    out_row = out_ptr + (b * C + c[None, :, None]) * L + g
    if HALVES:
        tl.store(out_row + j4, _pack4(o0, o1, o2, o3, G, BC), mask=mask_c)
        tl.store(out_row + 4 + j4, _pack4(o4, o5, o6, o7, G, BC), mask=mask_c)
    else:
        tl.store(out_row + tl.arange(0, 8)[None, None, :], _pack8(o0, o1, o2, o3, o4, o5, o6, o7, G, BC),
                 mask=mask_c)


@triton.jit
def _fwd_zero_tile(out_ptr, C, L, t0, BC: tl.constexpr, BT: tl.constexpr):
    """Steps [t0, t0 + BT) of BC channels, all past the clip's end: zeros, in the groups' 8-step vectors
    (rows 8-step aligned), where the taps code would run its masked sums for nothing."""
    G: tl.constexpr = BT // 8
    c = tl.program_id(1).to(tl.int64) * BC + tl.arange(0, BC).to(tl.int64)
    b = tl.program_id(2).to(tl.int64)
    t = t0 + 8 * tl.arange(0, G)[:, None, None] + tl.arange(0, 8)[None, None, :]
    mask = (c < C)[None, :, None] & (t < L)
    zeros = tl.zeros((G, BC, 8), dtype=out_ptr.dtype.element_ty)
    tl.store(out_ptr + (b * C + c[None, :, None]) * L + t, zeros, mask=mask)


@triton.jit(do_not_specialize=["BIDIR"])
def _conv_fwd(x_ptr, w_ptr, b_ptr, len_ptr, out_ptr, C, L, HALF, BIDIR, sx_b, sx_c,
              K: tl.constexpr, BC: tl.constexpr, BT: tl.constexpr, HAS_LEN: tl.constexpr, ALIGNED: tl.constexpr):
    """Per program a (BC, BT) tile. With ``ALIGNED`` (the caller's promise: L, sx_b, sx_c multiples of 8,
    x and out 16-byte aligned), K <= 4 and BT a multiple of 8, a tile of one direction whose taps all lie
    in [0, n_b) takes :func:`_fwd_groups_tile` (at L = 30,000 all but a row's first and last tiles), a
    tile wholly past the clip's end :func:`_fwd_zero_tile`; the others (a row's edges, a clip's last
    tile, tiles with both directions where C/2 is not a multiple of BC) take :func:`_fwd_taps_tile` in
    quarters. Without ``ALIGNED`` this is :func:`_conv_fwd_taps`: unaligned rows would give the groups
    scalar loads and layout conversions through shared memory (offline SASS), and rows of one tile
    have no tile whose taps all lie inside them."""
    t0 = tl.program_id(0) * BT
    c0 = tl.program_id(1) * BC
    n_b = _valid_len(len_ptr, tl.program_id(2).to(tl.int64), L, HAS_LEN)
    if ALIGNED & (K <= 4) & (BT % 8 == 0):
        # multiples of 8 to the compiler (Triton specialises integers on divisibility by 16 only)
        L8, sx_b8, sx_c8 = (L // 8) * 8, (sx_b // 8) * 8, (sx_c // 8) * 8
        anti = (BIDIR != 0) & (c0 >= HALF)
        causal = (BIDIR == 0) | (c0 + BC <= HALF)
        if causal & (t0 >= 4) & (t0 + BT <= n_b):
            _fwd_groups_tile(x_ptr, w_ptr, b_ptr, out_ptr, C, L8, sx_b8, sx_c8, t0, 1, K, BC, BT)
        elif anti & (t0 + BT + 4 <= n_b):
            _fwd_groups_tile(x_ptr, w_ptr, b_ptr, out_ptr, C, L8, sx_b8, sx_c8, t0, -1, K, BC, BT)
        elif HAS_LEN & (t0 >= n_b):
            _fwd_zero_tile(out_ptr, C, L8, t0, BC, BT)
        else:
            # in quarters, one after another (a loop, not unrolled): the whole tile at once would set the
            # kernel's registers, 72 per thread where the groups need 40 (48 with the quarters; sm_90,
            # offline), and so its occupancy
            for h in range(4):
                _fwd_taps_tile(x_ptr, w_ptr, b_ptr, out_ptr, C, L, HALF, BIDIR, sx_b, sx_c, n_b,
                               t0.to(tl.int64) + h * (BT // 4), K, BC, BT // 4)
    else:
        _fwd_taps_tile(x_ptr, w_ptr, b_ptr, out_ptr, C, L, HALF, BIDIR, sx_b, sx_c, n_b,
                       tl.program_id(0).to(tl.int64) * BT, K, BC, BT)


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
FWD_GROUPS = True
"""The forward through :func:`_conv_fwd` (in-register taps on interior tiles), else :func:`_conv_fwd_taps`;
the same bits either way. Offline the groups issue half the instructions and a sixth of the loads of
the taps (module docstring); on the H200 0.426 -> 0.261 ms at B=8, C=1,024, L=30,000
(benchmarks/ab_conv_fwd.py, RESULTS.md section 24)."""
INTERPRET_GROUPS = False
"""Whether CPU tensors (Triton's interpreter) take the groups path too. Interpreted, its many register
slices cost ~3x the taps code's time (13.7 against 4.7 s at 2 x 64 x 3,000), and every CPU test of a
block or model runs the conv; the same bits either way, so only tests/ops/test_causal_conv_triton.py
turns it on, to test the groups path itself."""
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
    section 17; measured with the taps kernel, ``_conv_fwd_taps``)."""
    return max(1, _BC * bt // 512)


def conv_tiles(L: int) -> tuple[int, int, int, int]:
    """(forward tile, dpre tile, dpre tiles per program, dx tile) for rows of L steps."""
    dpre_bt = _tile(L, _DPRE_BT)
    return _tile(L, _BT), dpre_bt, min(_DPRE_NT, triton.cdiv(L, dpre_bt)), _tile(L, _DX_BT)


def _rows_aligned(x: torch.Tensor, out: torch.Tensor) -> bool:
    """Every (b, c) row of x and out starts 16 bytes aligned, at a multiple of 8 steps (``_conv_fwd``'s
    ``ALIGNED``: with it the kernel takes L and the strides as multiples of 8)."""
    return (x.shape[-1] % 8 == 0 and x.stride(0) % 8 == 0 and x.stride(1) % 8 == 0
            and x.data_ptr() % 16 == 0 and out.data_ptr() % 16 == 0)


def conv_forward(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, bidirectional: bool,
                 lengths: torch.Tensor | None = None) -> torch.Tensor:
    """silu(depthwise conv): x (B, C, L) with unit stride along L, w (C, K) and b (C,) fp32 contiguous;
    ``lengths`` (B,) int64 valid steps per row (None: all)."""
    Bsz, C, L = x.shape
    K = w.shape[1]
    out = torch.empty((Bsz, C, L), dtype=x.dtype, device=x.device)
    bt = conv_tiles(L)[0]
    grid = (triton.cdiv(L, bt), triton.cdiv(C, _BC), Bsz)
    args = (x, w, b, lengths if lengths is not None else b, out, C, L, C // 2, int(bidirectional),
            x.stride(0), x.stride(1))
    meta = dict(K=K, BC=_BC, BT=bt, HAS_LEN=lengths is not None, num_warps=_fwd_warps(bt))
    if FWD_GROUPS and (x.is_cuda or INTERPRET_GROUPS):
        _conv_fwd[grid](*args, **meta, ALIGNED=L > bt and _rows_aligned(x, out))
    else:
        _conv_fwd_taps[grid](*args, **meta)
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
