"""Chunk-level kernels of the Triton selective scan (see :mod:`helix.ops.selective_scan.triton`).

Shared helpers, and what lets chunks run in parallel: each chunk's local end state from a zero start
(``_fwd_chunk_state``; its adjoint twin ``_bwd_chunk_state``) and the carries between chunks
(``_chunk_carry``, in place, rows laid out by ``_state_row``; ``_entry_state`` reads them). With per-row lengths, steps past a row's end are identity steps (never loaded),
so a reversed row's carry reaches its last valid step as zero: it starts there. Time offsets ascend in memory order for both directions; a time-reversed channel
scans each chunk from its last row down and passes carries from high chunks to low ones.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _combine(a_l, x_l, a_r, x_r):
    # compose h -> a_l h + x_l, then h -> a_r h + x_r
    return a_l * a_r, a_r * x_l + x_r


@triton.jit
def _prev_combine(v_l, p_l, m_l, v_r, p_r, m_r):
    # a segment is (its last value, the value before it, whether it has two or more elements): joined, the
    # last value is the right one's, the one before it the right one's own if it has one, else the left's last
    return v_r, tl.where(m_r > 0.0, p_r, v_l), tl.maximum(m_r, 1.0)


@triton.jit
def _shift_prev(x, fill, zero, axis: tl.constexpr):
    """x shifted one step along ``axis``: out[t] = x[t - 1], out[0] = fill[0] (fill and ``zero``, a tile of
    zeros, have x's shape). Written as an inclusive scan: where the axis lies inside a thread every combine
    folds to a register copy (with a constant ``zero``)."""
    _, prev, _ = tl.associative_scan((x, fill, zero), axis, _prev_combine)
    return prev


@triton.jit
def _dt_of(v, bias, SOFTPLUS: tl.constexpr):
    v = v + bias
    if SOFTPLUS:
        # softplus without overflow; below -15 log(1 + e^v) equals e^v in fp32
        v = tl.where(v > 20.0, v, tl.where(v < -15.0, tl.exp(v), tl.log(1.0 + tl.exp(v))))
    return v


@triton.jit
def _valid_len(len_ptr, b, L, HAS_LEN: tl.constexpr):
    """Row b's valid steps: lengths[b] (variable-length batches), or L."""
    if HAS_LEN:
        n = tl.load(len_ptr + b).to(tl.int64)
    else:
        n = L
    return n


@triton.jit
def _program_setup(L, D_GROUP, BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, DG: tl.constexpr):
    """Indices of this program: batch, first channel, B/C group, chunk, time offsets, masks.

    Time offsets ascend in memory order for both directions: the compiler can then prove them
    contiguous and vectorise the loads (a reversed index t = L-1-tau defeats that analysis).
    """
    d0 = tl.program_id(0).to(tl.int64) * DG
    c = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2).to(tl.int64)
    g = d0 // D_GROUP
    t = c * BLOCK_T + tl.arange(0, BLOCK_T).to(tl.int64)
    n = tl.arange(0, BLOCK_N)
    return d0, c, b, g, t, t < L, n


@triton.jit
def _channel_rows(u_ptr, dl_ptr, z_ptr, b, d0, tq, su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sz_b, sz_d, sz_l):
    """Pointers to steps tq of u, delta and z in channel d0 (batch row b)."""
    return (u_ptr + b * su_b + d0 * su_d + tq * su_l, dl_ptr + b * sdl_b + d0 * sdl_d + tq * sdl_l,
            z_ptr + b * sz_b + d0 * sz_d + tq * sz_l)


@triton.jit
def _channel_inputs(pu, pv, pz, i, su_d, sdl_d, sz_d, mask, HAS_Z: tl.constexpr):
    """u, delta and z (u again without z) of the i-th channel after the row pointers pu, pv, pz: the
    scan kernels load channel i + 1's while they compute channel i, which hides the loads' latency."""
    u = tl.load(pu + i * su_d, mask=mask, other=0.0)
    v = tl.load(pv + i * sdl_d, mask=mask, other=0.0)
    z = tl.load(pz + i * sz_d, mask=mask, other=0.0) if HAS_Z else u
    return u, v, z


@triton.jit
def _right(l, r):
    return r


@triton.jit
def _pin(x):
    """x unchanged (an identity scan, which LLVM deletes), but Triton cannot rematerialise what
    produced x in another layout through it: a softplus per time step is computed once, where
    its operands were loaded, and converted, not recomputed in each thread of the (T, N) tile."""
    return tl.associative_scan(x, 0, _right)


@triton.jit
def _channel_step(pu, pv, pz, u_nx, v_nx, z_nx, i, bias, su_d, sdl_d, sz_d, mask, DG: tl.constexpr,
                  HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr):
    """Channel i's u, z in fp32 and its dt (softplus of delta + bias, zero past the row's end, once
    per step), then channel i + 1's stored inputs, loaded now so their latency hides behind channel i."""
    u = u_nx.to(tl.float32)
    v = v_nx.to(tl.float32)
    z = z_nx.to(tl.float32)
    u_nx, v_nx, z_nx = _channel_inputs(pu, pv, pz, i + 1, su_d, sdl_d, sz_d, mask & (i + 1 < DG), HAS_Z)
    dt = _pin(tl.where(mask, _dt_of(v, bias, SOFTPLUS), 0.0))
    return u, z, dt, u_nx, v_nx, z_nx


@triton.jit
def _channel_consts(A_ptr, bias_ptr, d, n, mask_n, N, HAS_BIAS: tl.constexpr):
    """Channel d's A (times log2 e, for ``exp2``) and dt bias. With ``ScanConfig.prefetch`` the
    kernels load channel d + 1's during channel d (the last channel of a program reloads itself):
    the loads sit behind the previous channel's stores, which the compiler cannot move them above."""
    A2 = tl.load(A_ptr + d * N + n, mask=mask_n, other=0.0) * 1.4426950408889634
    bias = tl.load(bias_ptr + d) if HAS_BIAS else 0.0
    return A2, bias


@triton.jit
def _bc_tile(ptr, b, g, n, t, mask, s_b, s_g, s_n, s_l, rev):
    """A (T, N) tile of B or C loaded with ascending time (vectorised), then put in logical order (the
    backward kernels; the Gluon one compiles this helper too)."""
    x = tl.load(ptr + b * s_b + g * s_g + n[None, :] * s_n + t[:, None] * s_l, mask=mask, other=0.0)
    x = x.to(tl.float32)
    if rev:
        x = tl.flip(x, 0)
    return x


@triton.jit
def _bwd_channel_inputs(pu, pv, pg, pz, i, su_d, sdl_d, sg_d, sz_d, next_step, mask, mask_next, HAS_Z: tl.constexpr):
    """Channel i's u, delta, delta at the logical next step, dout and z (u again without z), as stored,
    after the row pointers pu, pv, pg, pz: the backward kernels load channel i + 1's while they
    compute channel i (the Gluon kernel compiles this helper too)."""
    u = tl.load(pu + i * su_d, mask=mask, other=0.0)
    v = tl.load(pv + i * sdl_d, mask=mask, other=0.0)
    vn = tl.load(pv + i * sdl_d + next_step, mask=mask & mask_next, other=0.0)
    g = tl.load(pg + i * sg_d, mask=mask, other=0.0)
    z = tl.load(pz + i * sz_d, mask=mask, other=0.0) if HAS_Z else u
    return u, v, vn, g, z


@triton.jit
def _column_tile(ptr, b, g, c, n, n_b, L, N, s_b, s_g, s_n, s_l, BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr):
    """A (T, N) fp32 tile of B or C in ascending time, one state column per thread. Rows of unit
    stride are padded to a multiple of 16 (``aligned_rows``), so whole 8-step vectors are read and the
    steps past the row's end zeroed afterwards: a mask at n_b would split the vectors when L is not a
    multiple of 8, and every step would be its own load."""
    cs = tl.arange(0, BLOCK_T // 8).to(tl.int64)
    ti = tl.arange(0, 8).to(tl.int64)
    t3 = c * BLOCK_T + cs[None, :, None] * 8 + ti[None, None, :]  # (1, T/8, 8)
    p = ptr + b * s_b + g * s_g + n[:, None, None] * s_n + t3 * s_l
    if s_l == 1:
        x = tl.load(p, mask=(t3 < (L + 15) // 16 * 16) & (n[:, None, None] < N), other=0.0)
        x = tl.where(t3 < n_b, x, 0.0)
    else:
        x = tl.load(p, mask=(t3 < n_b) & (n[:, None, None] < N), other=0.0)
    return tl.trans(tl.reshape(x.to(tl.float32), (BLOCK_N, BLOCK_T)))


@triton.jit
def _fwd_chunk_state(u_ptr, dl_ptr, A_ptr, B_ptr, bias_ptr, len_ptr, S_ptr, Sig_ptr,
                     L, D_GROUP, N, n_chunks,
                     su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l,
                     HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, BIDIR: tl.constexpr, REVERSE: tl.constexpr,
                     BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, DG: tl.constexpr, HAS_LEN: tl.constexpr,
                     COLUMNS: tl.constexpr = False, PREFETCH: tl.constexpr = False):
    d0, c, b, g, t, mask_t, n = _program_setup(L, D_GROUP, BLOCK_T, BLOCK_N, DG)
    # steps past the row's end are identity steps (decay 1, input 0) and are never loaded
    n_b = _valid_len(len_ptr, b, L, HAS_LEN)
    mask_t = t < n_b
    if BIDIR:
        rev = (g % 2) == 1  # group 1 runs backwards in time
    else:
        rev = REVERSE
    mask_n = n < N
    if COLUMNS:  # one state column per thread: the sum over time stays inside a thread
        Bt = _column_tile(B_ptr, b, g, c, n, n_b, L, N, sB_b, sB_g, sB_n, sB_l, BLOCK_T, BLOCK_N)
    else:
        Bt = tl.load(B_ptr + b * sB_b + g * sB_g + n[None, :] * sB_n + t[:, None] * sB_l,
                     mask=mask_t[:, None] & mask_n[None, :], other=0.0).to(tl.float32)  # (T, N)
    Dtot = tl.num_programs(0) * DG
    pu = u_ptr + b * su_b + d0 * su_d + t * su_l
    pv = dl_ptr + b * sdl_b + d0 * sdl_d + t * sdl_l
    if PREFETCH:
        u_nx, v_nx, _ = _channel_inputs(pu, pv, pu, 0, su_d, sdl_d, su_d, mask_t, False)
        A_nx, bias_nx = _channel_consts(A_ptr, bias_ptr, d0, n, mask_n, N, HAS_BIAS)
    for i in range(DG):
        d = d0 + i
        if PREFETCH:  # this channel's from the last iteration, the next one's issued now
            u, v, A2, bias = u_nx.to(tl.float32), v_nx.to(tl.float32), A_nx, bias_nx
            u_nx, v_nx, _ = _channel_inputs(pu, pv, pu, i + 1 - (i + 1) // DG, su_d, sdl_d, su_d, mask_t, False)
            A_nx, bias_nx = _channel_consts(A_ptr, bias_ptr, d + 1 - (i + 1) // DG, n, mask_n, N, HAS_BIAS)
        else:  # each load where it is used (the kernel before prefetching, unchanged)
            u = tl.load(u_ptr + b * su_b + d * su_d + t * su_l, mask=mask_t, other=0.0).to(tl.float32)
            v = tl.load(dl_ptr + b * sdl_b + d * sdl_d + t * sdl_l, mask=mask_t, other=0.0).to(tl.float32)
            bias = tl.load(bias_ptr + d) if HAS_BIAS else 0.0
        dt = tl.where(mask_t, _dt_of(v, bias, SOFTPLUS), 0.0)  # padded steps: decay 1, input 0
        if not PREFETCH:
            A2 = tl.load(A_ptr + d * N + n, mask=mask_n, other=0.0) * 1.4426950408889634
        cum = tl.cumsum(dt, 0)
        tot = tl.sum(dt, 0)
        if rev:  # decay from t-1 down to the chunk's first row (its logical end)
            expo = cum - dt
        else:  # decay from t+1 to the chunk's last row
            expo = tot - cum
        if COLUMNS:  # per-step values computed once per step, then broadcast to every state
            expo = _pin(expo)
            dtu = _pin(dt * u)
        else:
            dtu = dt * u
        w = tl.exp2(expo[:, None] * A2[None, :])
        s = tl.sum(w * (dtu[:, None] * Bt), 0)  # (N,)
        tl.store(S_ptr + _state_row(b, d, c, Dtot, n_chunks, not rev) * N + n, s.to(S_ptr.dtype.element_ty),
                 mask=mask_n)
        tl.store(Sig_ptr + (b * Dtot + d) * n_chunks + c, tot)  # Sig: (B, D, n_chunks)


@triton.jit
def _bwd_chunk_state(dl_ptr, A_ptr, C_ptr, z_ptr, dout_ptr, bias_ptr, len_ptr, V_ptr, Sig_ptr,
                     L, D_GROUP, N, n_chunks,
                     sdl_b, sdl_d, sdl_l, sC_b, sC_g, sC_n, sC_l, sz_b, sz_d, sz_l, sg_b, sg_d, sg_l,
                     HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, BIDIR: tl.constexpr, REVERSE: tl.constexpr,
                     BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, DG: tl.constexpr, HAS_LEN: tl.constexpr,
                     COLUMNS: tl.constexpr = False, PREFETCH: tl.constexpr = False):
    d0, c, b, g, t, mask_t, n = _program_setup(L, D_GROUP, BLOCK_T, BLOCK_N, DG)
    n_b = _valid_len(len_ptr, b, L, HAS_LEN)
    mask_t = t < n_b  # dout past the end is dropped, as the output is
    if BIDIR:
        rev = (g % 2) == 1  # group 1 runs backwards in time
    else:
        rev = REVERSE
    mask_n = n < N
    if COLUMNS:
        Ct = _column_tile(C_ptr, b, g, c, n, n_b, L, N, sC_b, sC_g, sC_n, sC_l, BLOCK_T, BLOCK_N)
    else:
        Ct = tl.load(C_ptr + b * sC_b + g * sC_g + n[None, :] * sC_n + t[:, None] * sC_l,
                     mask=mask_t[:, None] & mask_n[None, :], other=0.0).to(tl.float32)
    Dtot = tl.num_programs(0) * DG
    pv = dl_ptr + b * sdl_b + d0 * sdl_d + t * sdl_l
    pg = dout_ptr + b * sg_b + d0 * sg_d + t * sg_l
    pz = z_ptr + b * sz_b + d0 * sz_d + t * sz_l
    if PREFETCH:
        v_nx, g_nx, z_nx = _channel_inputs(pv, pg, pz, 0, sdl_d, sg_d, sz_d, mask_t, HAS_Z)
        A_nx, bias_nx = _channel_consts(A_ptr, bias_ptr, d0, n, mask_n, N, HAS_BIAS)
    for i in range(DG):
        d = d0 + i
        if PREFETCH:  # this channel's from the last iteration, the next one's issued now
            v, dy, z, A2, bias = v_nx, g_nx, z_nx, A_nx, bias_nx
            v_nx, g_nx, z_nx = _channel_inputs(pv, pg, pz, i + 1 - (i + 1) // DG, sdl_d, sg_d, sz_d, mask_t, HAS_Z)
            A_nx, bias_nx = _channel_consts(A_ptr, bias_ptr, d + 1 - (i + 1) // DG, n, mask_n, N, HAS_BIAS)
        else:  # each load where it is used (the kernel before prefetching, unchanged)
            v = tl.load(dl_ptr + b * sdl_b + d * sdl_d + t * sdl_l, mask=mask_t, other=0.0)
            bias = tl.load(bias_ptr + d) if HAS_BIAS else 0.0
        dt = tl.where(mask_t, _dt_of(v.to(tl.float32), bias, SOFTPLUS), 0.0)
        if not PREFETCH:
            dy = tl.load(dout_ptr + b * sg_b + d * sg_d + t * sg_l, mask=mask_t, other=0.0)
            z = tl.load(z_ptr + b * sz_b + d * sz_d + t * sz_l, mask=mask_t, other=0.0) if HAS_Z else dy
        dy = dy.to(tl.float32)
        if HAS_Z:
            z = z.to(tl.float32)
            dy = dy * z * tl.sigmoid(z)
        if not PREFETCH:
            A2 = tl.load(A_ptr + d * N + n, mask=mask_n, other=0.0) * 1.4426950408889634
        cum = tl.cumsum(dt, 0)
        if rev:  # decay from the chunk's last row (its logical start) down through t
            expo = tl.sum(dt, 0) - cum + dt
        else:  # decay from the chunk's first row through t
            expo = cum
        if COLUMNS:
            expo = _pin(expo)
            dy = _pin(dy)
        w = tl.exp2(expo[:, None] * A2[None, :])
        s = tl.sum(w * (dy[:, None] * Ct), 0)
        tl.store(V_ptr + _state_row(b, d, c, Dtot, n_chunks, rev) * N + n, s.to(V_ptr.dtype.element_ty), mask=mask_n)
        tl.store(Sig_ptr + (b * Dtot + d) * n_chunks + c, tl.sum(dt, 0))


@triton.jit
def _state_row(b, d, c, Dtot, n_chunks, ascending):
    """Row of chunk c in a (B, D, n_chunks + 1, N) carry buffer. Each channel has one extra row that
    stays zero (the state before the first chunk in carry order): row 0 for an ascending carry, which
    keeps chunk c at row c + 1; row n_chunks for a descending one, which keeps chunk c at row c."""
    return (b * Dtot + d) * (n_chunks + 1) + c + tl.where(ascending, 1, 0)


@triton.jit
def _entry_state(ptr, b, d, c, n, mask_n, Dtot, n_chunks, N, ascending):
    """The carry entering chunk c (N,): rows hold the state after each chunk (``_chunk_carry`` works in
    place), so it is the chunk before c in carry order, or the zero row. No mask beyond N's."""
    row = (b * Dtot + d) * (n_chunks + 1) + c + tl.where(ascending, 0, 1)
    return tl.load(ptr + row * N + n, mask=mask_n, other=0.0).to(tl.float32)


@triton.jit
def _chunk_carry(S_ptr, Sig_ptr, A_ptr, Dtot, D_GROUP, N, n_chunks, BACKWARD: tl.constexpr,
                 BIDIR: tl.constexpr, REVERSE: tl.constexpr,
                 CB: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """In place: chunk c's local sum in S (B, D, n_chunks + 1, N), at ``_state_row``, becomes the carry
    *after* chunk c, and the channel's extra row is set to zero.

    Ascending: E_c = exp(A Sigma_c) E_{c-1} + S_c from E_{-1} = 0; descending: the same recurrence from
    the last chunk down. The state of a forward channel ascends and its adjoint descends; a reversed
    channel the opposite. Readers take the state entering chunk c from its neighbour in carry order
    (``_entry_state``). In place halves the peak of the chunk-state buffers (one (B, D, n_chunks, N)
    fp32 tensor instead of two); every element is loaded and stored by the same program, the store after
    the scan that consumed the load. ``CB`` chunks at a time are combined with a scan, so the serial
    part is n_chunks / CB steps (L = 300,000 has ~9,000 chunks). A program's channels share a direction.
    """
    d = tl.program_id(0).to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D).to(tl.int64)
    b = tl.program_id(1).to(tl.int64)
    n = tl.arange(0, BLOCK_N)
    mask_dn = (d < Dtot)[:, None] & (n < N)[None, :]
    A2 = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=mask_dn, other=0.0) * 1.4426950408889634
    sig_rows = (b * Dtot + d) * n_chunks  # (BLOCK_D,)
    k = tl.arange(0, CB).to(tl.int64)
    h = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    if BIDIR:
        descending = ((tl.program_id(0) * BLOCK_D // D_GROUP) % 2 == 1) != BACKWARD
    else:
        descending = REVERSE != BACKWARD
    # state rows: chunk c at c + 1 when ascending (row 0 zero), at c when descending (row n_chunks zero)
    rows = (b * Dtot + d) * (n_chunks + 1) + tl.where(descending, 0, 1)
    zero_row = (b * Dtot + d) * (n_chunks + 1) + tl.where(descending, n_chunks, 0)
    tl.store(S_ptr + zero_row[:, None] * N + n[None, :], h.to(S_ptr.dtype.element_ty), mask=mask_dn)
    for j in range(tl.cdiv(n_chunks, CB)):
        # row k of the block is the k-th chunk in carry order (descending: from the top down), so the
        # scan along rows runs forwards either way (a reverse=True scan costs ~4x the shuffles)
        if descending:
            c0 = n_chunks - (j + 1) * CB
            cs = c0 + (CB - 1 - k)
        else:
            c0 = j * CB
            cs = c0 + k
        valid = (cs >= 0) & (cs < n_chunks)
        r = rows[None, :] + cs[:, None]  # (CB, BLOCK_D)
        m3 = valid[:, None, None] & mask_dn[None, :, :]
        s = tl.load(S_ptr + r[:, :, None] * N + n[None, None, :], mask=m3, other=0.0).to(tl.float32)
        sig = tl.load(Sig_ptr + sig_rows[None, :] + cs[:, None], mask=valid[:, None] & (d < Dtot)[None, :], other=0.0)
        e = tl.exp2(sig[:, :, None] * A2[None, :, :])  # masked chunks: (1, 0), the identity
        P, Q = tl.associative_scan((e, s), 0, _combine)
        out = Q + P * h[None, :, :]  # row k: the carry after chunk cs[k]
        tl.store(S_ptr + r[:, :, None] * N + n[None, None, :], out.to(S_ptr.dtype.element_ty), mask=m3)
        h = tl.sum(tl.where((k == CB - 1)[:, None, None], out, 0.0), 0)
