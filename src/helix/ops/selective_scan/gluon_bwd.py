"""``_bwd_scan`` (and ``_fwd_scan``) written in Gluon (Triton's explicit-layout dialect): one state column per thread.

The same function as :func:`helix.ops.selective_scan.triton._bwd_scan` (same arguments, same outputs),
for 32-step chunks of 32 states. Triton 3.6 chooses a (T, N) tile's layout itself, and for the
backward it keeps 8 steps x 4 states per thread, which costs ~270 shuffles per channel (scans across
lanes, reductions over N, flips) and 255 registers (B, C and the dB, dC accumulators held as four
(32, 32) fp32 tiles across the channel loop), so 8 warps per SM. Here the layouts are explicit:

- ``COL``: a (T, N) tile has all 32 steps of one state in one thread and the states across lanes,
  so both in-chunk scans are chains of FFMAs inside a thread and flipping time is register order;
- per-step work (softplus, gates, stores) runs one step per lane (``LANE``) and is broadcast to the
  tile once per channel; sums over N go through shared memory once (``ROW``: one step per lane, 32
  states in a thread) and add inside threads: no shuffles;
- ``ACC_SMEM`` (the default) keeps the dB, dC accumulators in shared memory and ``BC_SMEM`` B and C too
  (read and written as 16-byte vectors by the thread that owns them); without either, all four tiles
  stay in registers (255 registers and spills). Register caps that would fit more warps per SM were
  slower (``benchmarks/RESULTS.md`` sections 14 and 24);
- ``SHIFT_A`` (the default): a_{t+1} is a_t's tile one step on (register copies) instead of a second
  exponential, and a_t h_{t-1} is a_t times h's tile one step back (docs/kernels.md, session 21).

The channel loop compiles to 903 instructions with 10 shuffles and no spills (defaults), against ~1,530
and ~270 for ``_bwd_scan`` (``benchmarks/sass_count.py bwd bwd_gluon``, Triton 3.6, sm_90).

``_fwd_scan_gluon`` is the forward scan in the same layouts (``_fwd_scan``'s arguments and outputs):
311 instructions per channel loop against 341 for ``_fwd_scan_columns``, 146 registers against 149;
31.4 -> 27.4 ms per 300 s step on the H200 (RESULTS.md section 15).

Gluon has no interpreter: on CPU this module is compiled for sm_90 (``tests/ops``), and it runs against
the reference only on a GPU. ``ScanConfig(bwd_kernel=..., fwd_kernel=...)`` chooses the kernels (``triton.py``).
"""

from __future__ import annotations

try:  # Gluon ships with Triton >= 3.5; without it the Triton kernel runs
    import triton.language.standard as _tl_standard
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl

    from helix.ops.selective_scan import chunk_state, columns
except ImportError:  # pragma: no cover - depends on the installed Triton
    gluon = None

AVAILABLE = gluon is not None

if AVAILABLE:
    _flip = gluon.jit(_tl_standard.flip.fn)  # on an in-thread axis: register order, no instructions

    # the Triton kernels' helpers, compiled as Gluon (their tl ops take the operands' layouts)
    _combine = gluon.jit(chunk_state._combine.fn)
    _dt_of = gluon.jit(chunk_state._dt_of.fn)
    _channel_inputs = gluon.jit(chunk_state._bwd_channel_inputs.fn)
    _shift_prev = gluon.jit(chunk_state._shift_prev.fn)
    _fwd_channel_inputs = gluon.jit(chunk_state._channel_inputs.fn)
    _bc_tile = gluon.jit(chunk_state._bc_tile.fn)
    _serial_rows = gluon.jit(columns._serial_rows.fn)

    @gluon.jit
    def _sigmoid(x):
        return 1.0 / (1.0 + gl.exp(-x))

    @gluon.jit
    def _sum_n(x, ROW: gl.constexpr):
        """(T, N) tile -> (T,) sums over N, one step per lane: one pass through shared memory."""
        return gl.sum(gl.convert_layout(x, ROW), 1)

    @gluon.jit
    def _sum4(x, idx, axis: gl.constexpr, SIZE: gl.constexpr):
        """``gl.sum(x, axis)`` along an axis inside each thread as four independent chains of adds, then a
        tree: Triton adds a thread's elements one after another (31 dependent adds for 32). Each chain sums
        one quarter (the other terms are -0.0, which the compiler mostly drops: offline the loop has 6 more
        adds for dA's sum). ``idx``: x's index along the axis."""
        part = idx // (SIZE // 4)
        s0 = gl.sum(gl.where(part == 0, x, -0.0), axis)
        s1 = gl.sum(gl.where(part == 1, x, -0.0), axis)
        s2 = gl.sum(gl.where(part == 2, x, -0.0), axis)
        s3 = gl.sum(gl.where(part == 3, x, -0.0), axis)
        return (s0 + s1) + (s2 + s3)

    @gluon.jit
    def _row(len_ptr, L, D_GROUP, d0, b, BIDIR: gl.constexpr, REVERSE: gl.constexpr, DG: gl.constexpr,
             HAS_LEN: gl.constexpr):
        """The B/C group of channel d0, its direction, row b's length and the channel count."""
        g = d0 // D_GROUP
        if BIDIR:
            rev = (g % 2) == 1
        else:
            rev = REVERSE
        if HAS_LEN:
            n_b = gl.load(len_ptr + b).to(gl.int64)
        else:
            n_b = L
        return g, rev, n_b, gl.num_programs(0) * DG

    @gluon.jit
    def _program(len_ptr, L, D_GROUP, BIDIR: gl.constexpr, REVERSE: gl.constexpr, BLOCK_T: gl.constexpr,
                 DG: gl.constexpr, HAS_LEN: gl.constexpr, LANE: gl.constexpr):
        """This program's first channel, chunk, batch row, B/C group, direction, row length, channel
        count, and its steps in logical order one per lane (``tq``) with their masks."""
        d0 = gl.program_id(0).to(gl.int64) * DG
        c = gl.program_id(1).to(gl.int64)
        b = gl.program_id(2).to(gl.int64)
        g, rev, n_b, Dtot = _row(len_ptr, L, D_GROUP, d0, b, BIDIR, REVERSE, DG, HAS_LEN)
        i_l = gl.arange(0, BLOCK_T, layout=LANE)
        tq = c * BLOCK_T + gl.where(rev, BLOCK_T - 1 - i_l, i_l).to(gl.int64)  # logical order, per lane
        return d0, c, b, g, rev, n_b, Dtot, i_l, tq, tq < L, tq < n_b

    @gluon.jit
    def _channel_states(H_ptr, K_ptr, A_ptr, bias_ptr, D_ptr, b, d, Dtot, n_chunks, c, rev, n, mask_n, N,
                        HAS_BIAS: gl.constexpr, HAS_D: gl.constexpr, LOAD_K: gl.constexpr):
        """Channel d's per-channel inputs for chunk c: A (N,), the state entering the chunk H (N,), the
        adjoint's K (N,) if ``LOAD_K``, its bias and D (``PREFETCH``: loaded one channel ahead)."""
        row = (b * Dtot + d) * (n_chunks + 1) + c
        A = gl.load(A_ptr + d * N + n, mask=mask_n, other=0.0)
        Hn = gl.load(H_ptr + (row + gl.where(rev, 1, 0)) * N + n, mask=mask_n, other=0.0).to(gl.float32)
        if LOAD_K:
            Kn = gl.load(K_ptr + (row + gl.where(rev, 0, 1)) * N + n, mask=mask_n, other=0.0).to(gl.float32)
        else:
            Kn = Hn
        bias, Dd = _bias_and_d(bias_ptr, D_ptr, d, HAS_BIAS, HAS_D)
        return A, Hn, Kn, bias, Dd

    @gluon.jit
    def _bias_and_d(bias_ptr, D_ptr, d, HAS_BIAS: gl.constexpr, HAS_D: gl.constexpr):
        """Channel d's delta bias and skip weight D (0.0 where the op has none)."""
        if HAS_BIAS:
            bias = gl.load(bias_ptr + d)
        else:
            bias = 0.0
        if HAS_D:
            Dd = gl.load(D_ptr + d)
        else:
            Dd = 0.0
        return bias, Dd

    @gluon.jit
    def _bwd_scan_gluon(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, H_ptr, K_ptr, len_ptr,
                        dout_ptr, du_ptr, ddl_ptr, dz_ptr, dA_ptr, dD_ptr, dbias_ptr, dB_ptr, dC_ptr, y_ptr,
                        L, D_GROUP, N, n_chunks, L_BC,
                        su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l,
                        sC_b, sC_g, sC_n, sC_l, sz_b, sz_d, sz_l, sg_b, sg_d, sg_l,
                        HAS_D: gl.constexpr, HAS_Z: gl.constexpr, HAS_BIAS: gl.constexpr,
                        SOFTPLUS: gl.constexpr, BIDIR: gl.constexpr, REVERSE: gl.constexpr,
                        BLOCK_T: gl.constexpr, BLOCK_N: gl.constexpr, DG: gl.constexpr, HAS_LEN: gl.constexpr,
                        WRITE_Y: gl.constexpr, ACC_SMEM: gl.constexpr, BC_SMEM: gl.constexpr,
                        PREFETCH: gl.constexpr = False, FULL_N: gl.constexpr = False,
                        SHIFT_A: gl.constexpr = False):
        COL: gl.constexpr = gl.BlockedLayout([BLOCK_T, 1], [1, 32], [1, 1], [0, 1])
        ROW: gl.constexpr = gl.BlockedLayout([1, BLOCK_N], [32, 1], [1, 1], [1, 0])
        LANE: gl.constexpr = gl.SliceLayout(1, ROW)  # one step per lane
        TS: gl.constexpr = gl.SliceLayout(1, COL)  # every step in every thread (broadcast per channel)
        NS: gl.constexpr = gl.SliceLayout(0, COL)  # one state per lane
        ACC: gl.constexpr = gl.SwizzledSharedLayout(4, 1, 8, [0, 1])
        VEC: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [0])

        d0, c, b, g, rev, n_b, Dtot, i_l, tq, mask_st, mask_q = _program(len_ptr, L, D_GROUP, BIDIR, REVERSE,
                                                                         BLOCK_T, DG, HAS_LEN, LANE)
        if c * BLOCK_T >= n_b:  # a chunk wholly past the row's end: zero gradients, nothing computed
            zero = gl.zeros([BLOCK_T], gl.float32, LANE)
            for i in range(DG):
                offz = (b * Dtot + d0 + i) * L + tq
                gl.store(du_ptr + offz, zero.to(du_ptr.dtype.element_ty), mask=mask_st)
                gl.store(ddl_ptr + offz, zero.to(ddl_ptr.dtype.element_ty), mask=mask_st)
                if HAS_Z:
                    gl.store(dz_ptr + offz, zero.to(dz_ptr.dtype.element_ty), mask=mask_st)
                if WRITE_Y:
                    gl.store(y_ptr + offz, zero.to(y_ptr.dtype.element_ty), mask=mask_st)
        else:
            t = c * BLOCK_T + gl.arange(0, BLOCK_T, layout=TS).to(gl.int64)  # ascending, for B/C
            n = gl.arange(0, BLOCK_N, layout=NS)
            mask_n = n < N
            mask_tn = (t < n_b)[:, None] & mask_n[None, :]
            Bt = _bc_tile(B_ptr, b, g, n, t, mask_tn, sB_b, sB_g, sB_n, sB_l, rev)
            Ct = _bc_tile(C_ptr, b, g, n, t, mask_tn, sC_b, sC_g, sC_n, sC_l, rev)
            if BC_SMEM:
                B_s = gl.allocate_shared_memory(gl.float32, [BLOCK_T, BLOCK_N], ACC, Bt)
                C_s = gl.allocate_shared_memory(gl.float32, [BLOCK_T, BLOCK_N], ACC, Ct)
            # per-step vectors, written one step per lane and read back broadcast where they are used
            dt_s = gl.allocate_shared_memory(gl.float32, [BLOCK_T], VEC)
            dtu_s = gl.allocate_shared_memory(gl.float32, [BLOCK_T], VEC)
            dy_s = gl.allocate_shared_memory(gl.float32, [BLOCK_T], VEC)
            dtn_s = gl.allocate_shared_memory(gl.float32, [BLOCK_T], VEC)
            first = (gl.arange(0, BLOCK_T, layout=TS) == 0)[:, None]  # logical step 0 of the tile
            step = gl.where(rev, -1, 1)
            mask_next = mask_q & (i_l < BLOCK_T - 1) & (tq + step < n_b)
            if ACC_SMEM:
                dB_s = gl.allocate_shared_memory(gl.float32, [BLOCK_T, BLOCK_N], ACC,
                                                 gl.zeros([BLOCK_T, BLOCK_N], gl.float32, COL))
                dC_s = gl.allocate_shared_memory(gl.float32, [BLOCK_T, BLOCK_N], ACC,
                                                 gl.zeros([BLOCK_T, BLOCK_N], gl.float32, COL))
            else:
                dB_acc = gl.zeros([BLOCK_T, BLOCK_N], gl.float32, COL)
                dC_acc = gl.zeros([BLOCK_T, BLOCK_N], gl.float32, COL)
            pu = u_ptr + b * su_b + d0 * su_d + tq * su_l
            pv = dl_ptr + b * sdl_b + d0 * sdl_d + tq * sdl_l
            pz = z_ptr + b * sz_b + d0 * sz_d + tq * sz_l
            pg = dout_ptr + b * sg_b + d0 * sg_d + tq * sg_l
            u_nx, v_nx, vn_nx, g_nx, z_nx = _channel_inputs(pu, pv, pg, pz, 0, su_d, sdl_d, sg_d, sz_d,
                                                            step * sdl_l, mask_q, mask_next, HAS_Z)
            if PREFETCH:
                A_nx, H_nx, K_nx, bias_nx, D_nx = _channel_states(H_ptr, K_ptr, A_ptr, bias_ptr, D_ptr, b, d0, Dtot,
                                                                  n_chunks, c, rev, n, mask_n, N, HAS_BIAS, HAS_D, True)
            for i in range(DG):
                d = d0 + i
                u = u_nx.to(gl.float32)
                v = v_nx.to(gl.float32)
                vn = vn_nx.to(gl.float32)
                dout = g_nx.to(gl.float32)
                z = z_nx.to(gl.float32)
                u_nx, v_nx, vn_nx, g_nx, z_nx = _channel_inputs(pu, pv, pg, pz, i + 1, su_d, sdl_d, sg_d, sz_d,
                                                                step * sdl_l, mask_q & (i + 1 < DG), mask_next,
                                                                HAS_Z)
                if PREFETCH:  # this channel's from the last iteration; the next one's issued now (the last
                    # channel reloads itself), so their latency hides behind this channel's work
                    A, Hn, Kn, bias, Dd = A_nx, H_nx, K_nx, bias_nx, D_nx
                    A_nx, H_nx, K_nx, bias_nx, D_nx = _channel_states(
                        H_ptr, K_ptr, A_ptr, bias_ptr, D_ptr, b, d + 1 - (i + 1) // DG, Dtot, n_chunks, c, rev, n,
                        mask_n, N, HAS_BIAS, HAS_D, True)
                else:
                    bias, Dd = _bias_and_d(bias_ptr, D_ptr, d, HAS_BIAS, HAS_D)
                # per-step values, one step per lane
                dt = gl.where(mask_q, _dt_of(v, bias, SOFTPLUS), 0.0)
                if not SHIFT_A:
                    dtn = gl.where(mask_next, _dt_of(vn, bias, SOFTPLUS), 0.0)
                if HAS_Z:
                    sz = _sigmoid(z)
                    dy = dout * z * sz
                else:
                    dy = dout
                dtu = dt * u
                if not PREFETCH:
                    A = gl.load(A_ptr + d * N + n, mask=mask_n, other=0.0)
                A2 = A * 1.4426950408889634
                if BC_SMEM:
                    Bt = B_s.load(COL)
                    Ct = C_s.load(COL)
                dt_s.store(dt)
                dtu_s.store(dtu)
                dy_s.store(dy)
                if not SHIFT_A:
                    dtn_s.store(dtn)
                dt_b = dt_s.load(TS)
                dtu_b = dtu_s.load(TS)
                # the chunk's states from the carry entering it (folded into the first step)
                if not PREFETCH:
                    rowH = (b * Dtot + d) * (n_chunks + 1) + c + gl.where(rev, 1, 0)
                    Hn = gl.load(H_ptr + rowH * N + n, mask=mask_n, other=0.0).to(gl.float32)
                a = gl.exp2(dt_b[:, None] * A2[None, :])
                x = dtu_b[:, None] * Bt
                _, h = gl.associative_scan((a, gl.where(first, x + a * Hn[None, :], x)), 0, _combine)
                y = _sum_n(h * Ct, ROW) + Dd * u
                off = (b * Dtot + d) * L + tq  # contiguous (B, D, L) gradient outputs
                if HAS_Z:
                    gl.store(dz_ptr + off, (dout * y * sz * (1.0 + z * (1.0 - sz))).to(dz_ptr.dtype.element_ty),
                             mask=mask_st)
                    if WRITE_Y:
                        gl.store(y_ptr + off, (y * z * sz).to(y_ptr.dtype.element_ty), mask=mask_st)
                else:
                    if WRITE_Y:
                        gl.store(y_ptr + off, y.to(y_ptr.dtype.element_ty), mask=mask_st)
                dy_b = dy_s.load(TS)
                if ACC_SMEM:
                    dC_s.store(dC_s.load(COL) + h * dy_b[:, None])
                else:
                    dC_acc += h * dy_b[:, None]
                if SHIFT_A:  # a_t h_{t-1} from h's tile one step back (the entering state before step 0)
                    zero = gl.zeros([BLOCK_T, BLOCK_N], gl.float32, COL)
                    hx = a * _shift_prev(h, zero + Hn[None, :], zero, 0)
                else:
                    hx = h - x  # a_t h_{t-1}
                # adjoint g_t = dy_t C_t + a_{t+1} g_{t+1} + the carry from the next chunk: a forward
                # scan on the flipped tiles (in-thread, so the flips are free)
                if not PREFETCH:
                    rowK = (b * Dtot + d) * (n_chunks + 1) + c + gl.where(rev, 0, 1)
                    Kn = gl.load(K_ptr + rowK * N + n, mask=mask_n, other=0.0).to(gl.float32)
                if BC_SMEM:
                    Ct = C_s.load(COL)
                if SHIFT_A:  # a_{t+1} is a's tile one step on; at the chunk's last step 1 (K holds the next decay)
                    an = _shift_prev(_flip(a, 0), gl.full([BLOCK_T, BLOCK_N], 1.0, gl.float32, COL),
                                     gl.zeros([BLOCK_T, BLOCK_N], gl.float32, COL), 0)
                else:
                    an = _flip(gl.exp2(dtn_s.load(TS)[:, None] * A2[None, :]), 0)
                gy = _flip(dy_b[:, None] * Ct, 0)
                _, gr = gl.associative_scan((an, gl.where(first, gy + an * Kn[None, :], gy)), 0, _combine)
                gg = _flip(gr, 0)
                gh = gg * hx
                if BC_SMEM:
                    Bt = B_s.load(COL)
                gB = _sum_n(gg * Bt, ROW)
                ddt = gB * u + _sum_n(gh * A[None, :], ROW)
                if SOFTPLUS:
                    ddt = ddt * _sigmoid(v + bias)
                ddt = gl.where(mask_q, ddt, 0.0)
                gl.store(du_ptr + off, (dt * gB + Dd * dy).to(du_ptr.dtype.element_ty), mask=mask_st)
                gl.store(ddl_ptr + off, ddt.to(ddl_ptr.dtype.element_ty), mask=mask_st)
                # the sum over the chunk's steps in four chains (the dependent chain of 31 adds showed in
                # Nsight Compute's stall samples)
                dA_c = _sum4(gh * dt_s.load(TS)[:, None], gl.arange(0, BLOCK_T, layout=TS)[:, None], 0, BLOCK_T)
                if FULL_N:  # N == BLOCK_N: no mask, so no branch around the atomic (see scan_backward)
                    gl.atomic_add(dA_ptr + d * N + n, dA_c, sem="relaxed")
                else:
                    gl.atomic_add(dA_ptr + d * N + n, dA_c, mask=mask_n, sem="relaxed")
                # dD and dbias in one atomic instruction of two lanes: one branch around it instead of two
                # one-thread atomics, each behind its own branch with its sum's shuffles (RESULTS.md section 21)
                if HAS_D and HAS_BIAS:
                    gl.atomic_add(gl.where(i_l == 0, dD_ptr + d, dbias_ptr + d),
                                  gl.where(i_l == 0, gl.sum(dy * u, 0), gl.sum(ddt, 0)), mask=i_l < 2, sem="relaxed")
                elif HAS_D:
                    gl.atomic_add(dD_ptr + d + i_l, gl.where(i_l == 0, gl.sum(dy * u, 0), 0.0), mask=i_l < 1,
                                  sem="relaxed")
                elif HAS_BIAS:
                    gl.atomic_add(dbias_ptr + d + i_l, gl.where(i_l == 0, gl.sum(ddt, 0), 0.0), mask=i_l < 1,
                                  sem="relaxed")
                if ACC_SMEM:
                    dB_s.store(dB_s.load(COL) + gg * dtu_s.load(TS)[:, None])
                else:
                    dB_acc += gg * dtu_s.load(TS)[:, None]
            if ACC_SMEM:
                dB_acc = dB_s.load(COL)
                dC_acc = dC_s.load(COL)
            if rev:
                dB_acc = _flip(dB_acc, 0)
                dC_acc = _flip(dC_acc, 0)
            G = Dtot // D_GROUP
            off_bc = ((b * G + g) * N + n[None, :]) * L_BC + t[:, None]
            gl.atomic_add(dB_ptr + off_bc, dB_acc, mask=mask_tn, sem="relaxed")
            gl.atomic_add(dC_ptr + off_bc, dC_acc, mask=mask_tn, sem="relaxed")

    @gluon.jit
    def _fwd_scan_gluon(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, H_ptr, len_ptr, out_ptr,
                        L, D_GROUP, N, n_chunks,
                        su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l,
                        sC_b, sC_g, sC_n, sC_l, sz_b, sz_d, sz_l, so_b, so_d, so_l,
                        HAS_D: gl.constexpr, HAS_Z: gl.constexpr, HAS_BIAS: gl.constexpr,
                        SOFTPLUS: gl.constexpr, BIDIR: gl.constexpr, REVERSE: gl.constexpr,
                        BLOCK_T: gl.constexpr, BLOCK_N: gl.constexpr, DG: gl.constexpr, HAS_LEN: gl.constexpr,
                        PREFETCH: gl.constexpr = False):
        """``triton._fwd_scan`` (same arguments and outputs) with the layouts of ``_bwd_scan_gluon``: the
        in-chunk scan is an FFMA chain inside a thread (``COL``, B in logical order), and y_t = <C_t, h_t>
        is formed in ``ROW`` (one step per lane, 32 states in a thread), where C is loaded directly in
        logical order: one conversion of h through shared memory, then 32 FFMAs per thread."""
        ROW: gl.constexpr = gl.BlockedLayout([1, BLOCK_N], [32, 1], [1, 1], [1, 0])
        LANE: gl.constexpr = gl.SliceLayout(1, ROW)  # one step per lane

        d0, c, b, g, rev, n_b, Dtot, i_l, tq, mask_st, mask_q = _program(len_ptr, L, D_GROUP, BIDIR, REVERSE,
                                                                         BLOCK_T, DG, HAS_LEN, LANE)
        if c * BLOCK_T >= n_b:  # a chunk wholly past the row's end: zeros, nothing computed
            zero = gl.zeros([BLOCK_T], gl.float32, LANE)
            for i in range(DG):
                gl.store(out_ptr + b * so_b + (d0 + i) * so_d + tq * so_l, zero.to(out_ptr.dtype.element_ty),
                         mask=mask_st)
        else:
            _fwd_chunk_gluon(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, H_ptr, out_ptr,
                             L, N, n_chunks, su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l,
                             sC_b, sC_g, sC_n, sC_l, sz_b, sz_d, sz_l, so_b, so_d, so_l,
                             d0, c, b, g, rev, n_b, Dtot, tq, mask_st, mask_q,
                             HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, BLOCK_T, BLOCK_N, DG, False, True, PREFETCH)

    @gluon.jit
    def _fwd_chunk_gluon(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, H_ptr, out_ptr,
                         L, N, n_chunks, su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l,
                         sC_b, sC_g, sC_n, sC_l, sz_b, sz_d, sz_l, so_b, so_d, so_l,
                         d0, c, b, g, rev, n_b, Dtot, tq, mask_st, mask_q,
                         HAS_D: gl.constexpr, HAS_Z: gl.constexpr, HAS_BIAS: gl.constexpr, SOFTPLUS: gl.constexpr,
                         BLOCK_T: gl.constexpr, BLOCK_N: gl.constexpr, DG: gl.constexpr,
                         SERIAL: gl.constexpr, SAVE_H: gl.constexpr, PREFETCH: gl.constexpr = False):
        """One program's chunk c of the forward scan, its steps ``tq`` in logical order one per lane.
        ``SERIAL``: the entering state is read from, and the state after the chunk stored to,
        ``columns._serial_rows`` (``_fwd_serial_gluon``); else the entering state is H's row (chunk-parallel).
        ``PREFETCH`` (chunk-parallel only): A, H's row, bias and D are loaded one channel ahead."""
        COL: gl.constexpr = gl.BlockedLayout([BLOCK_T, 1], [1, 32], [1, 1], [0, 1])
        ROW: gl.constexpr = gl.BlockedLayout([1, BLOCK_N], [32, 1], [1, 1], [1, 0])
        TS: gl.constexpr = gl.SliceLayout(1, COL)  # every step in every thread
        NS: gl.constexpr = gl.SliceLayout(0, COL)  # one state per lane
        NR: gl.constexpr = gl.SliceLayout(0, ROW)  # every state in every thread
        VEC: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [0])
        t = c * BLOCK_T + gl.arange(0, BLOCK_T, layout=TS).to(gl.int64)  # ascending, for B
        n = gl.arange(0, BLOCK_N, layout=NS)
        mask_n = n < N
        Bt = _bc_tile(B_ptr, b, g, n, t, (t < n_b)[:, None] & mask_n[None, :], sB_b, sB_g, sB_n, sB_l, rev)
        if SERIAL:  # loaded as B is, then converted: C's (T, N) offsets in ROW are 32 per thread, and in a
            # loop over chunks the compiler keeps them live across it (35 registers more: 227 against 192)
            Cr = gl.convert_layout(_bc_tile(C_ptr, b, g, n, t, (t < n_b)[:, None] & mask_n[None, :], sC_b, sC_g, sC_n,
                                            sC_l, rev), ROW)
        else:
            nr = gl.arange(0, BLOCK_N, layout=NR)
            Cr = gl.load(C_ptr + b * sC_b + g * sC_g + nr[None, :] * sC_n + tq[:, None] * sC_l,
                         mask=mask_q[:, None] & (nr < N)[None, :], other=0.0).to(gl.float32)
        dt_s = gl.allocate_shared_memory(gl.float32, [BLOCK_T], VEC)
        dtu_s = gl.allocate_shared_memory(gl.float32, [BLOCK_T], VEC)
        first = (gl.arange(0, BLOCK_T, layout=TS) == 0)[:, None]  # logical step 0 of the tile
        pu = u_ptr + b * su_b + d0 * su_d + tq * su_l
        pv = dl_ptr + b * sdl_b + d0 * sdl_d + tq * sdl_l
        pz = z_ptr + b * sz_b + d0 * sz_d + tq * sz_l
        u_nx, v_nx, z_nx = _fwd_channel_inputs(pu, pv, pz, 0, su_d, sdl_d, sz_d, mask_q, HAS_Z)
        if PREFETCH:
            A_nx, H_nx, K_unused, bias_nx, D_nx = _channel_states(H_ptr, H_ptr, A_ptr, bias_ptr, D_ptr, b, d0,
                                                                  Dtot, n_chunks, c, rev, n, mask_n, N, HAS_BIAS,
                                                                  HAS_D, False)
        for i in range(DG):
            d = d0 + i
            u = u_nx.to(gl.float32)
            v = v_nx.to(gl.float32)
            z = z_nx.to(gl.float32)
            u_nx, v_nx, z_nx = _fwd_channel_inputs(pu, pv, pz, i + 1, su_d, sdl_d, sz_d, mask_q & (i + 1 < DG),
                                                   HAS_Z)
            if PREFETCH:  # as in _bwd_scan_gluon: this channel's from the last iteration, the next one's now
                A, Hn, bias, Dd = A_nx, H_nx, bias_nx, D_nx
                A_nx, H_nx, K_unused, bias_nx, D_nx = _channel_states(
                    H_ptr, H_ptr, A_ptr, bias_ptr, D_ptr, b, d + 1 - (i + 1) // DG, Dtot, n_chunks, c, rev, n,
                    mask_n, N, HAS_BIAS, HAS_D, False)
            else:
                if HAS_BIAS:
                    bias = gl.load(bias_ptr + d)
                else:
                    bias = 0.0
            dt = gl.where(mask_q, _dt_of(v, bias, SOFTPLUS), 0.0)
            if not PREFETCH:
                A = gl.load(A_ptr + d * N + n, mask=mask_n, other=0.0)
            A2 = A * 1.4426950408889634
            dt_s.store(dt)
            dtu_s.store(dt * u)
            if not PREFETCH:
                if SERIAL:
                    r_in, r_out = _serial_rows(b, d, c, Dtot, n_chunks, rev, SAVE_H)
                else:
                    r_in = (b * Dtot + d) * (n_chunks + 1) + c + gl.where(rev, 1, 0)
                Hn = gl.load(H_ptr + r_in * N + n, mask=mask_n, other=0.0).to(gl.float32)
            a = gl.exp2(dt_s.load(TS)[:, None] * A2[None, :])
            x = dtu_s.load(TS)[:, None] * Bt
            _, h = gl.associative_scan((a, gl.where(first, x + a * Hn[None, :], x)), 0, _combine)
            if SERIAL:  # the state after the chunk (its logical last step), stored by the lane that reads it
                last = (gl.arange(0, BLOCK_T, layout=TS) == BLOCK_T - 1)[:, None]
                gl.store(H_ptr + r_out * N + n, gl.sum(gl.where(last, h, -0.0), 0), mask=mask_n)
            y = gl.sum(gl.convert_layout(h, ROW) * Cr, 1)
            if HAS_D:
                if PREFETCH:
                    y += Dd * u
                else:
                    y += gl.load(D_ptr + d) * u
            if HAS_Z:
                y = y * z * _sigmoid(z)
            gl.store(out_ptr + b * so_b + d * so_d + tq * so_l, y.to(out_ptr.dtype.element_ty), mask=mask_st)

    @gluon.jit
    def _fwd_serial_gluon(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, H_ptr, len_ptr, out_ptr,
                          L, D_GROUP, N, n_chunks,
                          su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l,
                          sC_b, sC_g, sC_n, sC_l, sz_b, sz_d, sz_l, so_b, so_d, so_l,
                          HAS_D: gl.constexpr, HAS_Z: gl.constexpr, HAS_BIAS: gl.constexpr,
                          SOFTPLUS: gl.constexpr, BIDIR: gl.constexpr, REVERSE: gl.constexpr,
                          BLOCK_T: gl.constexpr, BLOCK_N: gl.constexpr, DG: gl.constexpr, HAS_LEN: gl.constexpr,
                          SAVE_H: gl.constexpr):
        """``columns._fwd_serial_columns`` (same arguments, outputs and H) in the layouts of
        ``_fwd_scan_gluon``: one program per (channel block, batch row) walks its chunks in scan order.
        Every state row is read and written as ``NS`` vectors (state n by lane n), so each lane reads
        back only what it stored itself: program order is all the ordering needed."""
        COL: gl.constexpr = gl.BlockedLayout([BLOCK_T, 1], [1, 32], [1, 1], [0, 1])
        ROW: gl.constexpr = gl.BlockedLayout([1, BLOCK_N], [32, 1], [1, 1], [1, 0])
        LANE: gl.constexpr = gl.SliceLayout(1, ROW)  # one step per lane
        NS: gl.constexpr = gl.SliceLayout(0, COL)  # one state per lane
        d0 = gl.program_id(0).to(gl.int64) * DG
        b = gl.program_id(1).to(gl.int64)
        g, rev, n_b, Dtot = _row(len_ptr, L, D_GROUP, d0, b, BIDIR, REVERSE, DG, HAS_LEN)
        n_valid = (n_b + BLOCK_T - 1) // BLOCK_T  # chunks with at least one valid step
        i_l = gl.arange(0, BLOCK_T, layout=LANE)
        n = gl.arange(0, BLOCK_N, layout=NS)
        mask_n = n < N
        zero_n = gl.zeros([BLOCK_N], gl.float32, NS)
        zero_t = gl.zeros([BLOCK_T], gl.float32, LANE)
        for i0 in range(DG):  # zero: the state before the first chunk, and the one entering the first chunk walked
            if SAVE_H:  # (a reversed row walks down from its last valid chunk; the chunks past it stay zero)
                base = (b * Dtot + d0 + i0) * (n_chunks + 1)
                gl.store(H_ptr + (base + gl.where(rev, n_chunks, 0)) * N + n, zero_n, mask=mask_n)
                gl.store(H_ptr + (base + gl.where(rev, n_valid, 0)) * N + n, zero_n, mask=mask_n)
            else:
                gl.store(H_ptr + (b * Dtot + d0 + i0) * N + n, zero_n, mask=mask_n)
        for j in range(n_valid):
            if rev:
                c = n_valid - 1 - j
            else:
                c = j
            tq = c * BLOCK_T + gl.where(rev, BLOCK_T - 1 - i_l, i_l).to(gl.int64)  # logical order, per lane
            _fwd_chunk_gluon(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, H_ptr, out_ptr,
                             L, N, n_chunks, su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l,
                             sC_b, sC_g, sC_n, sC_l, sz_b, sz_d, sz_l, so_b, so_d, so_l,
                             d0, c, b, g, rev, n_b, Dtot, tq, tq < L, tq < n_b,
                             HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, BLOCK_T, BLOCK_N, DG, True, SAVE_H)
        # chunks wholly past the row's end: zero outputs; their states are the end state carried along
        # (ascending), or zero (a reversed row). No ``if rev`` around a loop here: Triton 3.6 failed to
        # lower one (an assertion, compiled for sm_90) where the direction was a compile-time constant.
        for cz in range(n_valid, n_chunks):
            for iw in range(DG):
                tz = cz * BLOCK_T + i_l
                gl.store(out_ptr + b * so_b + (d0 + iw) * so_d + tz * so_l, zero_t.to(out_ptr.dtype.element_ty),
                         mask=tz < L)
                if SAVE_H:
                    row = (b * Dtot + d0 + iw) * (n_chunks + 1) + cz
                    kept = gl.where(rev, zero_n, gl.load(H_ptr + row * N + n, mask=mask_n, other=0.0))
                    gl.store(H_ptr + (row + gl.where(rev, 0, 1)) * N + n, kept, mask=mask_n)
