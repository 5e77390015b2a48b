"""The forward scan with one state column per thread (``ScanConfig(layout="columns")``, the default).

Same function as ``triton._fwd_scan`` (tested against the same reference), laid out differently.
``_fwd_scan`` keeps a (T, N) tile as 8 steps x 4 states per thread, so its in-chunk scan crosses
lanes (two levels of shuffles and a cumulative decay per element). Here a thread holds all T steps of
one state (lanes over N, time in registers):

- the in-chunk scan runs inside a thread, one FFMA per element: the entering state is folded into the
  chunk's first step (``tl.where`` on a compile-time row index folds away), so no cumulative decay is
  kept; a time-reversed channel scans the other way, which inside a thread is register order (a
  ``tl.flip`` is free there, a ``reverse=True`` scan costs ~475 shuffles);
- the sum over N (y_t = <C_t, h_t>) is ``_sum_n``: five pairwise halvings, which Triton lowers to one
  transposition through shared memory and in-thread adds, instead of a butterfly that leaves every lane
  all 32 sums (160 shuffles and 128 adds per tile);
- per-step values (dt, dt u) are computed once, one step per lane, and broadcast (``_pin``).

The tiles are loaded as (N, T/8, 8) and reshaped (``chunk_state._column_tile``), which is what makes
Triton choose this layout: its coalescing fills the 8-step vector, then lanes along N. Offline SASS
(``benchmarks/sass_count.py fwd fwd_columns``): the channel loop issues 341 instructions against 557,
no shuffles. The chunk-state kernels take the same tiles (``COLUMNS``). A backward kernel in this
layout was measured slower (docs/kernels.md): it needs the dB/dC accumulators, B and C and four
broadcast step vectors at once, and spills or reloads B/C per channel with lanes 2 L bytes apart.
"""

from __future__ import annotations

import triton
import triton.language as tl

from helix.ops.selective_scan.chunk_state import (_channel_consts, _channel_inputs, _channel_rows, _channel_step,
                                                   _column_tile, _combine, _entry_state, _pin, _program_setup,
                                                   _state_row, _valid_len)


@triton.jit
def _scan(a, x, BACKWARDS: tl.constexpr):
    """h_t = a_t h_prev + x_t along T, from the first row (or from the last, ``BACKWARDS``). Inside a
    thread a flip is register order; a ``reverse=True`` scan costs ~475 warp shuffles even there."""
    if BACKWARDS:
        _, h = tl.associative_scan((tl.flip(a, 0), tl.flip(x, 0)), 0, _combine)
        h = tl.flip(h, 0)
    else:
        _, h = tl.associative_scan((a, x), 0, _combine)
    return h


@triton.jit
def _halve(x, T: tl.constexpr, M: tl.constexpr):
    lo, hi = tl.split(tl.reshape(x, (T, M // 2, 2)))
    return lo + hi


@triton.jit
def _sum_n(x, T: tl.constexpr, N: tl.constexpr):
    """x (T, N) summed over N, as five pairwise halvings. ``tl.sum(x, 1)`` over lanes is a butterfly
    that leaves every lane all T sums (160 shuffles, 128 adds); splitting the lowest state bit into
    registers makes Triton move time onto the lanes instead, and the sums end one step per lane."""
    x = _halve(x, T, N)
    if N >= 4:
        x = _halve(x, T, N // 2)
    if N >= 8:
        x = _halve(x, T, N // 4)
    if N >= 16:
        x = _halve(x, T, N // 8)
    if N >= 32:
        x = _halve(x, T, N // 16)
    tl.static_assert(N <= 32)
    return tl.reshape(x, (T,))


@triton.jit
def _fwd_chunk_columns(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, H_ptr, out_ptr,
                       L, N, n_chunks, su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l,
                       sC_b, sC_g, sC_n, sC_l, sz_b, sz_d, sz_l, so_b, so_d, so_l,
                       d0, c, b, g, n, n_b,
                       HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                       BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, DG: tl.constexpr, REV: tl.constexpr,
                       SERIAL: tl.constexpr = False, SAVE_H: tl.constexpr = True):
    """One program's chunk of the forward scan (``REV``: the channels run backwards in time).

    ``SERIAL`` (``_fwd_serial_columns``): the state entering the chunk is the one this program stored
    after the chunk before it (``_serial_rows``), and the state after it is stored for the next."""
    mask_n = n < N
    Bt = _column_tile(B_ptr, b, g, c, n, n_b, L, N, sB_b, sB_g, sB_n, sB_l, BLOCK_T, BLOCK_N)
    Ct = _column_tile(C_ptr, b, g, c, n, n_b, L, N, sC_b, sC_g, sC_n, sC_l, BLOCK_T, BLOCK_N)
    i_t = tl.arange(0, BLOCK_T)
    tq = c * BLOCK_T + i_t.to(tl.int64)
    mask_q = tq < n_b
    mask_st = tq < L
    is_first = (i_t == (BLOCK_T - 1 if REV else 0))[:, None]
    Dtot = tl.num_programs(0) * DG
    pu, pv, pz = _channel_rows(u_ptr, dl_ptr, z_ptr, b, d0, tq,
                               su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sz_b, sz_d, sz_l)
    u_nx, v_nx, z_nx = _channel_inputs(pu, pv, pz, 0, su_d, sdl_d, sz_d, mask_q, HAS_Z)
    for i in range(DG):
        d = d0 + i
        A2, bias = _channel_consts(A_ptr, bias_ptr, d, n, mask_n, N, HAS_BIAS)
        u, z, dt, u_nx, v_nx, z_nx = _channel_step(pu, pv, pz, u_nx, v_nx, z_nx, i, bias, su_d, sdl_d, sz_d,
                                                   mask_q, DG, HAS_Z, SOFTPLUS)
        dtu = _pin(dt * u)
        x = dtu[:, None] * Bt
        a = tl.exp2(dt[:, None] * A2[None, :])
        if SERIAL:
            r_in, r_out = _serial_rows(b, d, c, Dtot, n_chunks, REV, SAVE_H)
            H = tl.load(H_ptr + r_in * N + n, mask=mask_n, other=0.0)
        else:
            H = _entry_state(H_ptr, b, d, c, n, mask_n, Dtot, n_chunks, N, not REV)
        h = _scan(a, tl.where(is_first, x + a * H[None, :], x), REV)
        if SERIAL:  # the state after the chunk: its logical last step (a compile-time row, one register)
            is_last = (i_t == (0 if REV else BLOCK_T - 1))[:, None]
            tl.store(H_ptr + r_out * N + n, tl.sum(tl.where(is_last, h, -0.0), 0), mask=mask_n)
        y = _sum_n(h * Ct, BLOCK_T, BLOCK_N)
        if HAS_D:
            y += tl.load(D_ptr + d) * u
        if HAS_Z:
            y = y * z * tl.sigmoid(z)
        tl.store(out_ptr + b * so_b + d * so_d + tq * so_l, y.to(out_ptr.dtype.element_ty), mask=mask_st)


@triton.jit
def _fwd_scan_columns(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, H_ptr, len_ptr, out_ptr,
                      L, D_GROUP, N, n_chunks,
                      su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l,
                      sC_b, sC_g, sC_n, sC_l, sz_b, sz_d, sz_l, so_b, so_d, so_l,
                      HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                      SOFTPLUS: tl.constexpr, BIDIR: tl.constexpr, REVERSE: tl.constexpr,
                      BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, DG: tl.constexpr, HAS_LEN: tl.constexpr):
    """Arguments, outputs and zero chunks as ``triton._fwd_scan``."""
    d0, c, b, g, t, mask_t, n = _program_setup(L, D_GROUP, BLOCK_T, BLOCK_N, DG)
    n_b = _valid_len(len_ptr, b, L, HAS_LEN)
    if HAS_LEN and c * BLOCK_T >= n_b:  # a chunk wholly past the end: zeros, nothing computed
        for i in range(DG):
            tl.store(out_ptr + b * so_b + (d0 + i) * so_d + t * so_l,
                     tl.zeros((BLOCK_T,), dtype=out_ptr.dtype.element_ty), mask=mask_t)
    else:
        if BIDIR:
            rev = (g % 2) == 1
        else:
            rev = REVERSE
        if rev:
            _fwd_chunk_columns(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, H_ptr, out_ptr,
                               L, N, n_chunks, su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l,
                               sC_b, sC_g, sC_n, sC_l, sz_b, sz_d, sz_l, so_b, so_d, so_l, d0, c, b, g, n, n_b,
                               HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, BLOCK_T, BLOCK_N, DG, True)
        else:
            _fwd_chunk_columns(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, H_ptr, out_ptr,
                               L, N, n_chunks, su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l,
                               sC_b, sC_g, sC_n, sC_l, sz_b, sz_d, sz_l, so_b, so_d, so_l, d0, c, b, g, n, n_b,
                               HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, BLOCK_T, BLOCK_N, DG, False)


@triton.jit
def _serial_rows(b, d, c, Dtot, n_chunks, rev, SAVE_H: tl.constexpr):
    """Rows of the state entering chunk c and of the state after it, for the serial forward kernels
    (``rev``: the channel runs backwards in time; a constant or known only at run time, so the Gluon
    kernel compiles this helper too). With ``SAVE_H`` they are ``chunk_state._state_row``'s rows of a
    (B, D, n_chunks + 1, N) buffer, so the backward reads them as it reads the chunk-parallel forward's:
    descending, chunk c at row c (the zero row at n_chunks); ascending, at row c + 1 (the zero row at 0).
    Without, one row per channel of a (B, D, N) buffer, read and overwritten chunk after chunk."""
    if SAVE_H:
        base = (b * Dtot + d) * (n_chunks + 1) + c
        return base + tl.where(rev, 1, 0), base + tl.where(rev, 0, 1)
    else:
        return b * Dtot + d, b * Dtot + d


@triton.jit
def _fwd_serial_columns(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, H_ptr, len_ptr, out_ptr,
                        L, D_GROUP, N, n_chunks,
                        su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l,
                        sC_b, sC_g, sC_n, sC_l, sz_b, sz_d, sz_l, so_b, so_d, so_l,
                        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                        SOFTPLUS: tl.constexpr, BIDIR: tl.constexpr, REVERSE: tl.constexpr,
                        BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, DG: tl.constexpr, HAS_LEN: tl.constexpr,
                        SAVE_H: tl.constexpr):
    """The forward scan with chunks in sequence (``ScanConfig(fwd_chunks="serial")``): one program per
    (channel block, batch row) walks its row's chunks in scan order and passes the state from chunk to
    chunk through ``H_ptr`` (fp32), so no chunk-state pass and no carry pass run before it. The chunk
    body is ``_fwd_chunk_columns``; outputs as ``triton._fwd_scan``. ``SAVE_H``: H is the
    (B, D, n_chunks + 1, N) buffer of ``chunk_entry_states`` (what backward reads), else (B, D, N).
    Chunks wholly past the row's end store zeros; their H rows keep the state (zero for a reversed row,
    whose scan starts at its last valid step)."""
    d0 = tl.program_id(0).to(tl.int64) * DG
    b = tl.program_id(1).to(tl.int64)
    g = d0 // D_GROUP
    n = tl.arange(0, BLOCK_N)
    mask_n = n < N
    n_b = _valid_len(len_ptr, b, L, HAS_LEN)
    n_valid = tl.cdiv(n_b, BLOCK_T)  # chunks with at least one valid step
    Dtot = tl.num_programs(0) * DG
    t = tl.arange(0, BLOCK_T).to(tl.int64)
    if BIDIR:
        rev = (g % 2) == 1
    else:
        rev = REVERSE
    zero = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for i0 in range(DG):  # zero: the state before the first chunk, and the one entering the first chunk walked
        if SAVE_H:  # (a reversed row walks down from its last valid chunk; the chunks past it stay zero)
            base = (b * Dtot + d0 + i0) * (n_chunks + 1)
            tl.store(H_ptr + (base + tl.where(rev, n_chunks, 0)) * N + n, zero, mask=mask_n)
            tl.store(H_ptr + (base + tl.where(rev, n_valid, 0)) * N + n, zero, mask=mask_n)
        else:
            tl.store(H_ptr + (b * Dtot + d0 + i0) * N + n, zero, mask=mask_n)
    for j in range(n_valid):
        tl.debug_barrier()  # the entering states were stored by this program's threads
        if rev:
            _fwd_chunk_columns(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, H_ptr, out_ptr,
                               L, N, n_chunks, su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l,
                               sC_b, sC_g, sC_n, sC_l, sz_b, sz_d, sz_l, so_b, so_d, so_l,
                               d0, n_valid - 1 - j, b, g, n, n_b,
                               HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, BLOCK_T, BLOCK_N, DG, True, True, SAVE_H)
        else:
            _fwd_chunk_columns(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, H_ptr, out_ptr,
                               L, N, n_chunks, su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l,
                               sC_b, sC_g, sC_n, sC_l, sz_b, sz_d, sz_l, so_b, so_d, so_l,
                               d0, j, b, g, n, n_b,
                               HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, BLOCK_T, BLOCK_N, DG, False, True, SAVE_H)
    tl.debug_barrier()
    # chunks wholly past the row's end: zero outputs; their states are the end state carried along
    # (ascending), or zero (a reversed row); one loop for both directions (as ``_fwd_serial_gluon``)
    for cz in range(n_valid, n_chunks):
        for iw in range(DG):
            tl.store(out_ptr + b * so_b + (d0 + iw) * so_d + (cz * BLOCK_T + t) * so_l,
                     tl.zeros((BLOCK_T,), dtype=out_ptr.dtype.element_ty), mask=cz * BLOCK_T + t < L)
            if SAVE_H:
                row = (b * Dtot + d0 + iw) * (n_chunks + 1) + cz
                kept = tl.where(rev, zero, tl.load(H_ptr + row * N + n, mask=mask_n, other=0.0))
                tl.store(H_ptr + (row + tl.where(rev, 0, 1)) * N + n, kept, mask=mask_n)


@triton.jit
def _fold(a, x, BACKWARDS: tl.constexpr, BLOCK_T: tl.constexpr):
    """The last state of h_t = a_t h_prev + x_t from zero along T (from the last row, ``BACKWARDS``):
    inside a thread, one FFMA per element (the product of the decays is dead). A scan, not
    ``tl.reduce``: compiled, a reduce with this non-commutative combine came out wrong on the H200
    (the interpreter folds in order); the scan's last row is picked with a compile-time mask, which
    folds to a register (the zeros are -0.0, which an add may drop)."""
    if BACKWARDS:
        a = tl.flip(a, 0)
        x = tl.flip(x, 0)
    _, h = tl.associative_scan((a, x), 0, _combine)
    last = (tl.arange(0, BLOCK_T) == BLOCK_T - 1)[:, None]
    return tl.sum(tl.where(last, h, -0.0), 0)


@triton.jit
def _both_chunk_columns(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, z_ptr, dout_ptr, bias_ptr, S_ptr, V_ptr, Sig_ptr,
                        L, N, n_chunks, su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l,
                        sC_b, sC_g, sC_n, sC_l, sz_b, sz_d, sz_l, sg_b, sg_d, sg_l,
                        d0, c, b, g, n, n_b,
                        HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                        BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, DG: tl.constexpr, REV: tl.constexpr,
                        PREFETCH: tl.constexpr):
    """One program's chunk of ``_both_chunk_states`` (``REV``: the channels run backwards in time)."""
    mask_n = n < N
    Bt = _column_tile(B_ptr, b, g, c, n, n_b, L, N, sB_b, sB_g, sB_n, sB_l, BLOCK_T, BLOCK_N)
    Ct = _column_tile(C_ptr, b, g, c, n, n_b, L, N, sC_b, sC_g, sC_n, sC_l, BLOCK_T, BLOCK_N)
    tq = c * BLOCK_T + tl.arange(0, BLOCK_T).to(tl.int64)
    mask_q = tq < n_b
    Dtot = tl.num_programs(0) * DG
    pu, pv, pz = _channel_rows(u_ptr, dl_ptr, z_ptr, b, d0, tq,
                               su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sz_b, sz_d, sz_l)
    pg = dout_ptr + b * sg_b + d0 * sg_d + tq * sg_l
    u_nx, v_nx, z_nx = _channel_inputs(pu, pv, pz, 0, su_d, sdl_d, sz_d, mask_q, HAS_Z)
    g_nx = tl.load(pg, mask=mask_q, other=0.0)
    if PREFETCH:
        A_nx, bias_nx = _channel_consts(A_ptr, bias_ptr, d0, n, mask_n, N, HAS_BIAS)
    for i in range(DG):
        d = d0 + i
        dy = g_nx.to(tl.float32)
        g_nx = tl.load(pg + (i + 1) * sg_d, mask=mask_q & (i + 1 < DG), other=0.0)
        if PREFETCH:  # this channel's A and bias from the last iteration, the next one's issued now
            A2, bias = A_nx, bias_nx
            A_nx, bias_nx = _channel_consts(A_ptr, bias_ptr, d + 1 - (i + 1) // DG, n, mask_n, N, HAS_BIAS)
        else:
            A2, bias = _channel_consts(A_ptr, bias_ptr, d, n, mask_n, N, HAS_BIAS)
        u, z, dt, u_nx, v_nx, z_nx = _channel_step(pu, pv, pz, u_nx, v_nx, z_nx, i, bias, su_d, sdl_d, sz_d,
                                                   mask_q, DG, HAS_Z, SOFTPLUS)
        if HAS_Z:
            dy = dy * z * tl.sigmoid(z)
        dtu = _pin(dt * u)
        dy = _pin(dy)
        # one exponential per element serves both sums (pinned: Triton would recompute it in the
        # flipped fold's layout rather than convert it, which is free inside a thread)
        a = _pin(tl.exp2(dt[:, None] * A2[None, :]))
        # the state's chunk sum runs with the scan, the adjoint's against it; the adjoint's terms
        # a_t dy_t C_t include their own step's decay (V sums exp(A cumincl_t) dy_t C_t)
        s = _fold(a, dtu[:, None] * Bt, REV, BLOCK_T)
        v = _fold(a, a * (dy[:, None] * Ct), not REV, BLOCK_T)
        tl.store(S_ptr + _state_row(b, d, c, Dtot, n_chunks, not REV) * N + n, s.to(S_ptr.dtype.element_ty),
                 mask=mask_n)
        tl.store(V_ptr + _state_row(b, d, c, Dtot, n_chunks, REV) * N + n, v.to(V_ptr.dtype.element_ty),
                 mask=mask_n)
        tl.store(Sig_ptr + (b * Dtot + d) * n_chunks + c, tl.sum(dt, 0))


@triton.jit
def _both_chunk_states(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, z_ptr, dout_ptr, bias_ptr, len_ptr, S_ptr, V_ptr, Sig_ptr,
                       L, D_GROUP, N, n_chunks,
                       su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l,
                       sC_b, sC_g, sC_n, sC_l, sz_b, sz_d, sz_l, sg_b, sg_d, sg_l,
                       HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, BIDIR: tl.constexpr,
                       REVERSE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, DG: tl.constexpr,
                       HAS_LEN: tl.constexpr, PREFETCH: tl.constexpr = False):
    """``_fwd_chunk_state`` and ``_bwd_chunk_state`` in one pass, for a backward that recomputes the
    forward's chunk states (the lean block): S, V and Sig as those two write them. Each element's
    decay a_t = exp(dt_t A) is computed once and both sums are folds over time inside a thread (the
    state's along the scan, the adjoint's against it), instead of one exponential per element and sum."""
    d0, c, b, g, t, mask_t, n = _program_setup(L, D_GROUP, BLOCK_T, BLOCK_N, DG)
    n_b = _valid_len(len_ptr, b, L, HAS_LEN)
    if BIDIR:
        rev = (g % 2) == 1
    else:
        rev = REVERSE
    if rev:
        _both_chunk_columns(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, z_ptr, dout_ptr, bias_ptr, S_ptr, V_ptr, Sig_ptr,
                            L, N, n_chunks, su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l,
                            sC_b, sC_g, sC_n, sC_l, sz_b, sz_d, sz_l, sg_b, sg_d, sg_l, d0, c, b, g, n, n_b,
                            HAS_Z, HAS_BIAS, SOFTPLUS, BLOCK_T, BLOCK_N, DG, True, PREFETCH)
    else:
        _both_chunk_columns(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, z_ptr, dout_ptr, bias_ptr, S_ptr, V_ptr, Sig_ptr,
                            L, N, n_chunks, su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l,
                            sC_b, sC_g, sC_n, sC_l, sz_b, sz_d, sz_l, sg_b, sg_d, sg_l, d0, c, b, g, n, n_b,
                            HAS_Z, HAS_BIAS, SOFTPLUS, BLOCK_T, BLOCK_N, DG, False, PREFETCH)
