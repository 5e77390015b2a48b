"""Fused Mamba-1 selective scan in Triton: forward and backward kernels, chunked over time.

Same function as :func:`helix.ops.selective_scan.reference.selective_scan_reference`:

    dt_t = softplus(delta_t + bias)       a_t = exp(dt_t A)      x_t = dt_t B_t u_t
    h_t  = a_t * h_{t-1} + x_t            y_t = <C_t, h_t> + D u_t      out_t = y_t * silu(z_t)

Time is cut into chunks of ``BLOCK_T`` steps, and every (batch, channel block, chunk) is one program,
so a 30,000-step sequence yields hundreds of independent programs per channel instead of one serial
walk. A chunk only needs the state entering it, which takes three launches:

1. ``_fwd_chunk_state``: each chunk's end state from a zero start, S_c = sum_t exp(A (Sigma_c -
   cum_t)) x_t (one exp per element, no scan), and its total step Sigma_c = sum_t dt_t.
2. ``_chunk_carry``: H_{c+1} = exp(A Sigma_c) H_c + S_c over chunks, a scan over blocks of chunks.
3. ``_fwd_scan``: the in-chunk scan from H_c (``tl.associative_scan`` over (a, x) pairs) and the
   fused epilogue (C contraction, D skip, SiLU gate).

Only H (B, D, n_chunks + 1, N), fp32 by default, is kept for backward; backward recomputes the in-chunk states.
The forward-side kernels lay their (T, N) tiles out one state column per thread by default
(``columns.py``, ``ScanConfig(layout=...)``); ``_bwd_scan`` keeps several steps and states per thread.
On CUDA the forward and backward scans run by default as their Gluon twins (``gluon_bwd.py``: the same
arguments and outputs, one state column per thread, explicit layouts); ``_fwd_scan_columns``/``_fwd_scan``
and ``_bwd_scan`` are what run elsewhere.
The adjoint g_t = dL/dh_t = dy_t C_t + a_{t+1} g_{t+1} is chunked the same way: K_c = a_{t1} g_{t1}
(what flows into chunk c from the chunk after it) obeys K_{c-1} = exp(A Sigma_c) K_c + V_c with
V_c = sum_t exp(A cumincl_t) dy_t C_t. ``_bwd_scan`` then recomputes h, runs the reverse scan for g
and forms every gradient; a_t h_{t-1} is read as h_t - x_t, which avoids shifting tiles.
dA, dD, dbias (per channel) and dB, dC (shared by all channels) are reduced with fp32 atomics, once
per program after summing ``DG`` channels in registers. The atomics are relaxed: Triton's default
(acq_rel) fences every one, which stalls the channel loop on all of its outstanding loads.
Memory: O(B L D) plus the chunk states.

Tiles are in logical (scan) order. A time-reversed channel's B/C tiles are loaded with ascending
offsets (provably contiguous, vectorised) and flipped once per program; its per-channel vectors are
read and written at descending offsets; carries pass from high chunks to low ones. Every in-chunk
``tl.associative_scan`` then runs forwards: Triton 3.6 lowers a ``reverse=True`` scan of a (32, 32)
tile to ~700 warp shuffles, a forward one to ~30 (``benchmarks/sass_count.py``). The adjoint's
reverse recurrence runs forwards on flipped tiles. The bidirectional block runs both directions in
one launch per kernel without flipped copies of the activations (see ``bidirectional.py``). All
offsets are int64 (L = 300,000 at B*D = 16k passes 2^31 elements). The chunk-level kernels live in
``chunk_state.py``.
"""

from __future__ import annotations

import os
import warnings

import torch
import triton
import triton.language as tl

from helix.ops.selective_scan.chunk_state import (_bc_tile, _bwd_channel_inputs, _bwd_chunk_state, _channel_consts,
                                                   _channel_inputs, _channel_rows, _channel_step,
                                                   _chunk_carry, _combine, _dt_of, _entry_state, _fwd_chunk_state,
                                                   _pin, _program_setup, _valid_len)
from helix.ops.selective_scan.columns import _both_chunk_states, _fwd_scan_columns, _fwd_serial_columns
from helix.ops.selective_scan import gluon_bwd


@triton.jit
def _logical_time(c, L, rev, BLOCK_T: tl.constexpr):
    """Time index of each logical step of chunk c: ascending, or descending for a reversed channel.

    Per-channel vectors are read and written at these offsets, so every tile is in the order the
    scan runs and only forward (``reverse=False``) scans are needed: Triton 3.6 lowers a reverse
    scan of a (32, 32) tile to ~700 warp shuffles against ~30 for a forward one.
    """
    tau = tl.arange(0, BLOCK_T).to(tl.int64)
    tt = c * BLOCK_T + tl.where(rev, BLOCK_T - 1 - tau, tau)
    return tt, tt < L


@triton.jit
def _fwd_scan(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, H_ptr, len_ptr, out_ptr,
              L, D_GROUP, N, n_chunks,
              su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l,
              sC_b, sC_g, sC_n, sC_l, sz_b, sz_d, sz_l, so_b, so_d, so_l,
              HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
              SOFTPLUS: tl.constexpr, BIDIR: tl.constexpr, REVERSE: tl.constexpr,
              BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, DG: tl.constexpr, HAS_LEN: tl.constexpr):
    d0, c, b, g, t, mask_t, n = _program_setup(L, D_GROUP, BLOCK_T, BLOCK_N, DG)
    if BIDIR:
        rev = (g % 2) == 1  # group 1 runs backwards in time
    else:
        rev = REVERSE
    n_b = _valid_len(len_ptr, b, L, HAS_LEN)
    mask_t = t < n_b  # loads stop at the row's end; outputs there come out zero (u, C read as 0)
    if c * BLOCK_T >= n_b:  # a chunk wholly past the end: zeros, nothing computed
        tz, mz = _logical_time(c, L, rev, BLOCK_T)
        for i in range(DG):
            tl.store(out_ptr + b * so_b + (d0 + i) * so_d + tz * so_l,
                     tl.zeros((BLOCK_T,), dtype=out_ptr.dtype.element_ty), mask=mz)
    else:
        mask_n = n < N
        mask_tn = mask_t[:, None] & mask_n[None, :]
        Bt = _bc_tile(B_ptr, b, g, n, t, mask_tn, sB_b, sB_g, sB_n, sB_l, rev)
        Ct = _bc_tile(C_ptr, b, g, n, t, mask_tn, sC_b, sC_g, sC_n, sC_l, rev)
        tq, mask_st = _logical_time(c, L, rev, BLOCK_T)
        mask_q = tq < n_b
        Dtot = tl.num_programs(0) * DG
        pu, pv, pz = _channel_rows(u_ptr, dl_ptr, z_ptr, b, d0, tq,
                                   su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sz_b, sz_d, sz_l)
        u_nx, v_nx, z_nx = _channel_inputs(pu, pv, pz, 0, su_d, sdl_d, sz_d, mask_q, HAS_Z)
        for i in range(DG):
            d = d0 + i
            A2, bias = _channel_consts(A_ptr, bias_ptr, d, n, mask_n, N, HAS_BIAS)
            u, z, dt, u_nx, v_nx, z_nx = _channel_step(pu, pv, pz, u_nx, v_nx, z_nx, i, bias, su_d, sdl_d, sz_d,
                                                       mask_q, DG, HAS_Z, SOFTPLUS)
            a = tl.exp2(dt[:, None] * A2[None, :])
            x = (dt * u)[:, None] * Bt
            pa, hl = tl.associative_scan((a, x), 0, _combine)
            H = _entry_state(H_ptr, b, d, c, n, mask_n, Dtot, n_chunks, N, not rev)
            y = tl.sum((hl + pa * H[None, :]) * Ct, 1)
            if HAS_D:
                y += tl.load(D_ptr + d) * u
            if HAS_Z:
                y = y * z * tl.sigmoid(z)
            tl.store(out_ptr + b * so_b + d * so_d + tq * so_l, y.to(out_ptr.dtype.element_ty), mask=mask_st)


@triton.jit
def _bwd_chunk(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, H_ptr, K_ptr, dout_ptr,
               du_ptr, ddl_ptr, dz_ptr, dA_ptr, dD_ptr, dbias_ptr, dB_ptr, dC_ptr, y_ptr,
               L, D_GROUP, N, n_chunks, L_BC,
               su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l,
               sC_b, sC_g, sC_n, sC_l, sz_b, sz_d, sz_l, sg_b, sg_d, sg_l,
               d0, c, b, g, t, mask_t, n, rev, n_b,
               HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
               BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, DG: tl.constexpr, WRITE_Y: tl.constexpr):
    """One program's chunk of ``_bwd_scan`` (every step before the row's end is computed)."""
    mask_n = n < N
    mask_tn = mask_t[:, None] & mask_n[None, :]
    Bt = _bc_tile(B_ptr, b, g, n, t, mask_tn, sB_b, sB_g, sB_n, sB_l, rev)
    Ct = _bc_tile(C_ptr, b, g, n, t, mask_tn, sC_b, sC_g, sC_n, sC_l, rev)
    tq, mask_st = _logical_time(c, L, rev, BLOCK_T)
    mask_q = tq < n_b  # loads; stores use mask_st (values past the end come out zero)
    # a at the logical successor inside the chunk; the chunk's logical last step has its successor
    # in the next logical chunk, which the carry K accounts for (a := 1)
    i_t = tl.arange(0, BLOCK_T)
    step = tl.where(rev, -1, 1)
    mask_next = mask_q & (i_t < BLOCK_T - 1) & (tq + step < n_b)
    dB_acc = tl.zeros((BLOCK_T, BLOCK_N), dtype=tl.float32)
    dC_acc = tl.zeros((BLOCK_T, BLOCK_N), dtype=tl.float32)
    Dtot = tl.num_programs(0) * DG
    pu = u_ptr + b * su_b + d0 * su_d + tq * su_l
    pv = dl_ptr + b * sdl_b + d0 * sdl_d + tq * sdl_l
    pz = z_ptr + b * sz_b + d0 * sz_d + tq * sz_l
    pg = dout_ptr + b * sg_b + d0 * sg_d + tq * sg_l
    u_nx, v_nx, vn_nx, g_nx, z_nx = _bwd_channel_inputs(pu, pv, pg, pz, 0, su_d, sdl_d, sg_d, sz_d, step * sdl_l,
                                                         mask_q, mask_next, HAS_Z)
    for i in range(DG):
        d = d0 + i
        u = u_nx.to(tl.float32)
        v = v_nx.to(tl.float32)
        vn = vn_nx.to(tl.float32)
        dout = g_nx.to(tl.float32)
        z = z_nx.to(tl.float32)
        u_nx, v_nx, vn_nx, g_nx, z_nx = _bwd_channel_inputs(pu, pv, pg, pz, i + 1, su_d, sdl_d, sg_d, sz_d,
                                                             step * sdl_l, mask_q & (i + 1 < DG), mask_next, HAS_Z)
        bias = tl.load(bias_ptr + d) if HAS_BIAS else 0.0
        dt = _pin(tl.where(mask_q, _dt_of(v, bias, SOFTPLUS), 0.0))
        dtn = tl.where(mask_next, _dt_of(vn, bias, SOFTPLUS), 0.0)
        A = tl.load(A_ptr + d * N + n, mask=mask_n, other=0.0)
        A2 = A * 1.4426950408889634
        # recompute the chunk's states from the saved carry
        dtu = dt * u
        x = dtu[:, None] * Bt
        a = tl.exp2(dt[:, None] * A2[None, :])
        pa, hl = tl.associative_scan((a, x), 0, _combine)
        h = hl + pa * _entry_state(H_ptr, b, d, c, n, mask_n, Dtot, n_chunks, N, not rev)[None, :]
        Dd = tl.load(D_ptr + d) if HAS_D else 0.0
        off = (b * Dtot + d) * L + tq  # contiguous (B, D, L) gradient outputs
        if HAS_Z or WRITE_Y:
            y = tl.sum(h * Ct, 1) + Dd * u
        if HAS_Z:
            sz = tl.sigmoid(z)
            dy = dout * z * sz
            tl.store(dz_ptr + off, (dout * y * sz * (1.0 + z * (1.0 - sz))).to(dz_ptr.dtype.element_ty),
                     mask=mask_st)
            if WRITE_Y:  # the forward's output, remade (dout's own elements, already read)
                tl.store(y_ptr + off, (y * z * sz).to(y_ptr.dtype.element_ty), mask=mask_st)
        else:
            dy = dout
            if WRITE_Y:
                tl.store(y_ptr + off, y.to(y_ptr.dtype.element_ty), mask=mask_st)
        # adjoint: g_t = dy_t C_t + a_{t+1} g_{t+1} plus the carry from the next chunk, a reverse
        # scan done forwards on flipped tiles; dy_t C_t is flipped per channel (~60 shuffles) rather than
        # C once per program: a persistent flipped copy of C is 32 more registers across the loop
        an_rev = tl.exp2(tl.flip(dtn, 0)[:, None] * A2[None, :])
        pr, gl = tl.associative_scan((an_rev, tl.flip(dy[:, None] * Ct, 0)), 0, _combine)
        gg = tl.flip(gl + pr * _entry_state(K_ptr, b, d, c, n, mask_n, Dtot, n_chunks, N, rev)[None, :], 0)
        gh = gg * (h - x)  # g_t a_t h_{t-1}
        gB = tl.sum(gg * Bt, 1)
        ddt = gB * u + tl.sum(gh * A[None, :], 1)
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(v + bias)
        ddt = tl.where(mask_q, ddt, 0.0)
        tl.store(du_ptr + off, (dt * gB + Dd * dy).to(du_ptr.dtype.element_ty), mask=mask_st)
        tl.store(ddl_ptr + off, ddt.to(ddl_ptr.dtype.element_ty), mask=mask_st)
        tl.atomic_add(dA_ptr + d * N + n, tl.sum(gh * dt[:, None], 0), mask=mask_n, sem="relaxed")
        if HAS_D:
            tl.atomic_add(dD_ptr + d, tl.sum(dy * u, 0), sem="relaxed")
        if HAS_BIAS:
            tl.atomic_add(dbias_ptr + d, tl.sum(ddt, 0), sem="relaxed")
        dB_acc += gg * dtu[:, None]
        dC_acc += h * dy[:, None]
    # dB, dC: (B, G, N, L_BC) fp32, one atomic per element per program, back in ascending time
    if rev:
        dB_acc = tl.flip(dB_acc, 0)
        dC_acc = tl.flip(dC_acc, 0)
    G = Dtot // D_GROUP
    off_bc = ((b * G + g) * N + n[None, :]) * L_BC + t[:, None]
    tl.atomic_add(dB_ptr + off_bc, dB_acc, mask=mask_tn, sem="relaxed")
    tl.atomic_add(dC_ptr + off_bc, dC_acc, mask=mask_tn, sem="relaxed")


@triton.jit
def _bwd_scan(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, H_ptr, K_ptr, len_ptr, dout_ptr,
              du_ptr, ddl_ptr, dz_ptr, dA_ptr, dD_ptr, dbias_ptr, dB_ptr, dC_ptr, y_ptr,
              L, D_GROUP, N, n_chunks, L_BC,
              su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l,
              sC_b, sC_g, sC_n, sC_l, sz_b, sz_d, sz_l, sg_b, sg_d, sg_l,
              HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
              SOFTPLUS: tl.constexpr, BIDIR: tl.constexpr, REVERSE: tl.constexpr,
              BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, DG: tl.constexpr, HAS_LEN: tl.constexpr,
              WRITE_Y: tl.constexpr):
    """du, ddelta, dz (and with ``WRITE_Y`` the forward's output y) are written (B, D, L) contiguous;
    the rest are fp32 atomics.

    Tiles are in logical (scan) order, as in ``_fwd_scan``: the state recomputation is a forward
    scan, and the adjoint's reverse scan runs forwards on flipped tiles (three flips of a (T, N)
    tile cost a fraction of one ``reverse=True`` scan). With lengths, every gradient past a row's end
    is zero (dout there is dropped and the steps are identities); chunks wholly past it only store zeros.
    """
    d0, c, b, g, t, mask_t, n = _program_setup(L, D_GROUP, BLOCK_T, BLOCK_N, DG)
    if BIDIR:
        rev = (g % 2) == 1
    else:
        rev = REVERSE
    n_b = _valid_len(len_ptr, b, L, HAS_LEN)
    mask_t = t < n_b
    if HAS_LEN:  # resolved at compile time: without lengths the kernel is the plain chunk body
        if c * BLOCK_T >= n_b:  # a chunk wholly past the row's end: zero gradients, nothing computed
            tz, mz = _logical_time(c, L, rev, BLOCK_T)
            Dz = tl.num_programs(0) * DG
            for i in range(DG):
                offz = (b * Dz + d0 + i) * L + tz
                tl.store(du_ptr + offz, tl.zeros((BLOCK_T,), dtype=du_ptr.dtype.element_ty), mask=mz)
                tl.store(ddl_ptr + offz, tl.zeros((BLOCK_T,), dtype=ddl_ptr.dtype.element_ty), mask=mz)
                if HAS_Z:
                    tl.store(dz_ptr + offz, tl.zeros((BLOCK_T,), dtype=dz_ptr.dtype.element_ty), mask=mz)
                if WRITE_Y:
                    tl.store(y_ptr + offz, tl.zeros((BLOCK_T,), dtype=y_ptr.dtype.element_ty), mask=mz)
        else:
            _bwd_chunk(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, H_ptr, K_ptr, dout_ptr,
                       du_ptr, ddl_ptr, dz_ptr, dA_ptr, dD_ptr, dbias_ptr, dB_ptr, dC_ptr, y_ptr,
                       L, D_GROUP, N, n_chunks, L_BC,
                       su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l,
                       sC_b, sC_g, sC_n, sC_l, sz_b, sz_d, sz_l, sg_b, sg_d, sg_l,
                       d0, c, b, g, t, mask_t, n, rev, n_b,
                       HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, BLOCK_T, BLOCK_N, DG, WRITE_Y)
    else:
        _bwd_chunk(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, H_ptr, K_ptr, dout_ptr,
                   du_ptr, ddl_ptr, dz_ptr, dA_ptr, dD_ptr, dbias_ptr, dB_ptr, dC_ptr, y_ptr,
                   L, D_GROUP, N, n_chunks, L_BC,
                   su_b, su_d, su_l, sdl_b, sdl_d, sdl_l, sB_b, sB_g, sB_n, sB_l,
                   sC_b, sC_g, sC_n, sC_l, sz_b, sz_d, sz_l, sg_b, sg_d, sg_l,
                   d0, c, b, g, t, mask_t, n, rev, n_b,
                   HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, BLOCK_T, BLOCK_N, DG, WRITE_Y)


class ScanConfig:
    """Launch shape: ``block_t`` steps per chunk, up to ``dg`` channels per program, warps.

    B and C (and dB, dC) rows are given a length that is a multiple of 16, so the compiler can prove
    16-byte alignment, vectorise their loads and lay the (T, N) tiles out with several time steps per
    thread (the scan along T then runs mostly inside threads). B, C are N/D of the traffic.

    ``bwd_dg``/``bwd_warps``: the same for ``_bwd_scan`` (None: as the forward kernels). ``fill``: a
    forward-side launch with fewer programs than this halves its channels per program until it has
    that many (or one channel per program), so short sequences (L = 100-500, a few chunks) still
    spread over every SM (``_bwd_scan`` measured best at its cap at every length).
    ``bwd_maxnreg``: a register cap for ``_bwd_scan`` (ptxas ``.maxnreg``; None: ptxas's choice, which is
    255 for it at one warp: 8 warps per SM; 168 allows 12, 128 allows 16, at the price of spills).
    ``states``: ``"float32"`` (the default) stores the chunk states (forward carries H, adjoint carries
    K) in fp32; ``"bfloat16"`` stores them in bfloat16 when the activations are bfloat16 (half their
    memory and traffic; every kernel still carries and sums them in fp32), which about doubled dA's
    error against the float64 reference in the interpreter at L = 500 (RESULTS.md section 13).
    ``layout``: how the forward-side kernels (chunk states and the forward scan) lay out a (T, N)
    tile: ``"columns"``, one state column per thread (``columns.py``; where ``columns()`` allows the
    tile, else rows are used), or ``"rows"``, several steps and states per thread, as
    ``_bwd_scan`` always does (RESULTS.md section 13 measured a column-layout backward: slower).
    ``bwd_kernel``: ``"gluon"`` (the default) runs the backward as ``gluon_bwd._bwd_scan_gluon``, one
    state column per thread with explicit layouts, where ``gluon_backward()`` allows it (compiled CUDA
    launches of 32 x 32 tiles at one warp), else ``_bwd_scan``; ``"triton"`` always runs ``_bwd_scan``.
    ``bwd_smem``: where the Gluon kernel keeps the dB, dC accumulators (``"acc"``, the default) and B, C too
    (``"acc+bc"``): in shared memory, or all in registers (``"none"``, fastest on the H200 with
    ``bwd_next="exp"``: RESULTS.md section 14).
    ``fwd_kernel``: ``"gluon"`` (the default) runs the forward scan as ``gluon_bwd._fwd_scan_gluon`` where
    ``gluon_forward()`` allows it (else the Triton kernels); ``"triton"`` always runs ``_fwd_scan_columns``
    or ``_fwd_scan`` (RESULTS.md section 15: 31.4 -> 27.4 ms per 300 s step).
    ``fuse_states``: a backward that recomputes the forward's chunk states (``scan_backward(H=None)``, the
    lean block) computes them and the adjoint's chunk sums in one pass where the column layout applies
    (one exponential per element instead of two); ``False`` runs the two passes.
    ``fwd_chunks``: ``"parallel"`` (the default) runs the forward as above (chunk states, carries, then every
    chunk at once); ``"serial"`` runs one program per (channel block, batch row) that walks its chunks in
    order and passes the state on itself (``columns._fwd_serial_columns``, ``gluon_bwd._fwd_serial_gluon``),
    which drops the chunk-state and carry passes, where the column layout applies, there is more than one
    chunk and the states are fp32; ``serial_fill``: its channels per program are halved (from ``dg``) until
    the launch has that many programs. On the H200 it was 2.4x slower at B=1, L=300,000 and within 2%
    at B=8, L=30,000 (docs/kernels.md): opt-in, kept so other GPUs can be measured.
    ``prefetch``: the Gluon scans (forward chunk-parallel, backward) load each channel's A, entering
    state rows, bias and D one channel ahead, so their memory latency hides behind the previous channel's
    work: on by default; ``False`` gives the kernels without it. The chunk-state passes
    (``_fwd_chunk_state``, ``_bwd_chunk_state``, ``_both_chunk_states``) do the same with their
    per-channel loads. Together, on the H200, the scan's forward + backward took 11-13% less (RESULTS.md
    section 18).
    ``full_n``: where N equals the tile's 32 states and L is a multiple of 16, the Gluon backward adds dA
    without a mask (no branch around the atomic): 2% faster at 8 x 30,000 on the H200 (RESULTS.md section
    21); ``False`` keeps the mask everywhere.
    ``bwd_next``: how the Gluon backward gets the adjoint's decay a_{t+1}: ``"exp"``, a second exponential
    per element; ``"shift"`` (the default), a_t's tile one step on (register order: the adjoint's scan then
    runs while a_t is live, and a_t h_{t-1} is h's tile one step back times a_t). With the accumulators in
    shared memory its channel loop issues 903 instructions without spills against 1,090 with 28/35 spill
    stores/loads (offline, Triton 3.6, sm_90); on the H200 the 300 s step took 1.7-4.7 ms less at B=8 and
    10-16 ms less at B=32, for both models (RESULTS.md section 24).
    """

    def __init__(self, block_t: int = 32, dg: int = 128, num_warps: int = 1, bwd_dg: int | None = None,
                 bwd_warps: int | None = None, fill: int = 0, bwd_maxnreg: int | None = None,
                 layout: str = "columns", states: str = "float32", bwd_kernel: str = "gluon",
                 bwd_smem: str = "acc", fuse_states: bool = True, fwd_kernel: str = "gluon",
                 fwd_chunks: str = "parallel", serial_fill: int = 2048, prefetch: bool = True,
                 full_n: bool = True, bwd_next: str = "shift"):
        if bwd_next not in ("exp", "shift"):
            raise ValueError(f"bwd_next must be 'exp' or 'shift', not {bwd_next!r}")
        if bwd_kernel not in ("triton", "gluon"):
            raise ValueError(f"bwd_kernel must be 'triton' or 'gluon', not {bwd_kernel!r}")
        if fwd_kernel not in ("triton", "gluon"):
            raise ValueError(f"fwd_kernel must be 'triton' or 'gluon', not {fwd_kernel!r}")
        if fwd_chunks not in ("parallel", "serial"):
            raise ValueError(f"fwd_chunks must be 'parallel' or 'serial', not {fwd_chunks!r}")
        if bwd_smem not in ("none", "acc", "acc+bc"):
            raise ValueError(f"bwd_smem must be 'none', 'acc' or 'acc+bc', not {bwd_smem!r}")
        if layout not in ("rows", "columns"):
            raise ValueError(f"layout must be 'rows' or 'columns', not {layout!r}")
        if states not in ("float32", "bfloat16"):
            raise ValueError(f"states must be 'float32' or 'bfloat16', not {states!r}")
        self.block_t, self.dg, self.num_warps = block_t, dg, num_warps
        self.bwd_maxnreg = bwd_maxnreg
        self.layout, self.states = layout, states
        self.bwd_kernel, self.bwd_smem = bwd_kernel, bwd_smem
        self.bwd_dg = dg if bwd_dg is None else bwd_dg
        self.bwd_warps = num_warps if bwd_warps is None else bwd_warps
        self.fill = fill
        self.fuse_states = bool(fuse_states)
        self.fwd_kernel = fwd_kernel
        self.fwd_chunks, self.serial_fill = fwd_chunks, int(serial_fill)
        self.prefetch = bool(prefetch)
        self.full_n = bool(full_n)
        self.bwd_next = bwd_next

    def kernel(self, backward: bool) -> tuple[int, int]:
        """(channel cap, warps) of the forward-side kernels, or of ``_bwd_scan``."""
        return (self.bwd_dg, self.bwd_warps) if backward else (self.dg, self.num_warps)

    def __repr__(self) -> str:
        return (f"ScanConfig(block_t={self.block_t}, dg={self.dg}, num_warps={self.num_warps}, "
                f"bwd_dg={self.bwd_dg}, bwd_warps={self.bwd_warps}, fill={self.fill}, "
                f"bwd_maxnreg={self.bwd_maxnreg}, layout={self.layout!r}, states={self.states!r}, "
                f"bwd_kernel={self.bwd_kernel!r}, bwd_smem={self.bwd_smem!r}, fuse_states={self.fuse_states}, "
                f"fwd_kernel={self.fwd_kernel!r}, fwd_chunks={self.fwd_chunks!r}, serial_fill={self.serial_fill}, "
                f"prefetch={self.prefetch}, full_n={self.full_n}, bwd_next={self.bwd_next!r})")

    def state_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """Storage of the chunk states for activations of ``dtype``: bfloat16 for bfloat16 activations
        with ``states="bfloat16"``, else float32 (float16 activations keep more mantissa than bfloat16
        states would). Kernels carry and accumulate in fp32."""
        if self.states == "bfloat16" and dtype == torch.bfloat16:
            return torch.bfloat16
        return torch.float32

    def gluon_backward(self, block_n: int, device: torch.device) -> bool:
        """Whether ``_bwd_scan_gluon`` runs the backward: asked for, Gluon importable, a compiled launch on
        a CUDA device (Gluon has no interpreter), 32-step chunks of 17-32 states (one state per lane)
        and one warp per program; otherwise the Triton kernel runs."""
        return self.bwd_kernel == "gluon" and self._gluon_tile(block_n, device, self.bwd_warps)

    def gluon_forward(self, block_n: int, device: torch.device) -> bool:
        """Whether ``gluon_bwd._fwd_scan_gluon`` runs the forward scan: the same conditions as
        :meth:`gluon_backward`, for the forward-side launch."""
        return self.fwd_kernel == "gluon" and self._gluon_tile(block_n, device, self.num_warps)

    def _gluon_tile(self, block_n: int, device: torch.device, warps: int) -> bool:
        """What both Gluon kernels need: Gluon importable, a compiled CUDA launch, 32 x 32 tiles, one warp."""
        return (gluon_bwd.AVAILABLE and device.type == "cuda" and not _interpreting() and self.block_t == 32
                and block_n == 32 and warps == 1)

    def serial_forward(self, block_n: int, n_chunks: int, dtype: torch.dtype) -> bool:
        """Whether the forward walks its chunks in sequence (``fwd_chunks="serial"``): asked for, the
        column layout, more than one chunk, and fp32 states (the state passes through memory from chunk
        to chunk, and bfloat16 storage would round it at every chunk)."""
        return (self.fwd_chunks == "serial" and self.columns(block_n) and n_chunks > 1
                and self.state_dtype(dtype) == torch.float32)

    def columns(self, block_n: int) -> bool:
        """Whether the forward-side kernels use the column layout for tiles of ``block_n`` states: 16
        to 32 states and at least 8 lanes' worth of steps per state. A smaller tile would repeat
        lanes, and compiled on the H200 the chunk sums over time came out wrong with 4 states
        (RESULTS.md section 13); the interpreter cannot show that, so such tiles keep rows."""
        return (self.layout == "columns" and self.block_t % 8 == 0 and 16 <= block_n <= 32
                and block_n * self.block_t >= 256)


# measured on the H200 (benchmarks/sweep_scan_configs.py, RESULTS.md section 9): every kernel is best
# at 128 channels per program on long sequences; short launches (B=32, L=100-500) want the forward-side
# kernels at 16-32 channels per program (16,384 programs), while _bwd_scan stays best at 128
DEFAULT_CONFIG = ScanConfig(block_t=32, dg=128, num_warps=1, bwd_dg=128, fill=16384)
LEAN_CONFIG = ScanConfig(block_t=32, dg=128, num_warps=1, bwd_dg=128, fill=16384, states="bfloat16")
"""The lean BiMamba block's (``bimamba/fused.py``, the long-clip path, where memory is what it is for):
chunk states stored in bf16 for bf16 activations. At 300 s on the H200 (RESULTS.md section 20): 1.0 GB
less at B=8 and 2.8-3.5 ms faster per step; against the float64 reference dA's error rose ~10%
(1.61e-3 -> 1.78e-3 relative), the output's and other gradients' by 2.5% or less."""


_GLUON_FAILED: list[str] = []  # set once the Gluon kernel failed to compile here: Triton runs from then on


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _launch(kernel, grid, *args, **kwargs):
    """Every kernel launch goes through here (benchmarks wrap it to read registers and spills)."""
    return kernel[grid](*args, **kwargs)


def _padded_len(L: int) -> int:
    return -(-L // 16) * 16


def aligned_rows(x, cfg):
    """x (B, G, N, L) -> the same values in rows of a multiple of 16 elements (a copy only if needed).

    A row of unit stride can then be read up to the next multiple of 16 (the column-layout kernels
    read whole 8-step vectors and zero the steps past the end): its stride is a multiple of 16, and
    the last row's padding must lie inside the storage, else the rows are copied."""
    L = x.shape[-1]
    last = x.storage_offset() + sum((size - 1) * st for size, st in zip(x.shape[:3], x.stride()[:3]))
    inside = (last + _padded_len(L)) * x.element_size() <= x.untyped_storage().nbytes()
    aligned = all(st % 16 == 0 for st in x.stride()[:3]) and x.data_ptr() % 16 == 0 and inside
    if x.stride(-1) != 1 or aligned:
        return x
    out = x.new_empty((*x.shape[:3], _padded_len(L)))
    out[..., :L] = x
    return out[..., :L]


def _channels_per_program(d_group: int, cap: int, programs_per_channel: int = 0, fill: int = 0) -> int:
    # a program's channels must share one B/C group, so dg divides the group size; with ``fill``, fewer
    # channels per program while the launch (d_group / dg programs per group, times the rest) is short
    dg = 1
    while dg * 2 <= cap and d_group % (dg * 2) == 0:
        dg *= 2
    while dg > 1 and fill and (d_group // dg) * programs_per_channel < fill:
        dg //= 2
    return dg


def _strides3(x):
    return (x.stride(0), x.stride(1), x.stride(2)) if x is not None else (0, 0, 0)


def _launch_shape(u, Bm, cfg, backward: bool = False):
    Bsz, Dtot, L = u.shape
    G, N = Bm.shape[1], Bm.shape[2]
    d_group = Dtot // G
    n_chunks = triton.cdiv(L, cfg.block_t)
    cap, warps = cfg.kernel(backward)
    dg = _channels_per_program(d_group, cap, G * n_chunks * Bsz, 0 if backward else cfg.fill)
    meta = dict(BLOCK_T=cfg.block_t, BLOCK_N=triton.next_power_of_2(N), DG=dg, num_warps=warps)
    if backward and cfg.bwd_maxnreg is not None:
        meta["maxnreg"] = cfg.bwd_maxnreg
    return Bsz, Dtot, L, N, d_group, n_chunks, (Dtot // dg, n_chunks, Bsz), meta


def _carry(S, Sig, A, backward: bool, d_group: int, bidir: bool, reverse: bool):
    """Chunk-local sums S (B, D, n_chunks + 1, N) -> the carry after each chunk, in place (S is returned)."""
    Bsz, Dtot, n_chunks, N = S.shape
    n_chunks -= 1  # one zero row per channel (``_state_row``)
    block_n = triton.next_power_of_2(N)
    # one channel and one warp per program, CB chunks per step: the pass is a stream over S, and on the
    # H200 this shape moves it at ~3.6 TB/s, against ~2.3 TB/s for (16, 2, N) tiles over 4 warps (RESULTS.md
    # section 17); 64 chunks per step only pay on the longest rows (L = 300,000: 9,375 chunks). With
    # bfloat16 states (the lean block's) 16 chunks per step: 0.350 against 0.394 ms at 8 x 30,000 (section 21)
    cb = 64 if n_chunks >= 4096 else (16 if S.element_size() == 2 else 32)
    cb = min(cb, triton.next_power_of_2(n_chunks))
    _launch(_chunk_carry, (Dtot, Bsz), S, Sig, A, Dtot, d_group, N, n_chunks, BACKWARD=backward, BIDIR=bidir,
            REVERSE=reverse, CB=cb, BLOCK_D=1, BLOCK_N=block_n, num_warps=1)
    return S


def chunk_entry_states(u, delta, A, Bm, bias, softplus, bidir, reverse, cfg, lengths=None):
    """H (B, D, n_chunks + 1, N) fp32: the state after every chunk in scan order plus a zero row per
    channel, from which the kernels read the state entering each chunk (``_entry_state``; what
    backward needs saved).
    ``lengths``: None or (B,) int64 contiguous valid steps per row, on u's device."""
    Bsz, Dtot, L, N, d_group, n_chunks, grid, meta = _launch_shape(u, Bm, cfg)
    flags = dict(HAS_BIAS=bias is not None, SOFTPLUS=softplus, BIDIR=bool(bidir), REVERSE=bool(reverse),
                 HAS_LEN=lengths is not None, **meta)
    if n_chunks == 1:  # one chunk starts from zero: nothing to carry
        return u.new_zeros((Bsz, Dtot, 2, N), dtype=cfg.state_dtype(u.dtype))
    S = u.new_empty((Bsz, Dtot, n_chunks + 1, N), dtype=cfg.state_dtype(u.dtype))
    Sig = u.new_empty((Bsz, Dtot, n_chunks), dtype=torch.float32)
    _launch(_fwd_chunk_state, grid,
            u, delta, A, Bm, bias if bias is not None else A, lengths if lengths is not None else A, S, Sig,
            L, d_group, N, n_chunks,
            *_strides3(u), *_strides3(delta), *Bm.stride(), COLUMNS=cfg.columns(meta["BLOCK_N"]),
            PREFETCH=cfg.prefetch, **flags)
    return _carry(S, Sig, A, False, d_group, bidir, reverse)


def scan_forward(u, delta, A, Bm, Cm, D, z, bias, softplus, bidir, reverse, cfg, lengths=None, save_states=True):
    """The scan's output and H, the chunk-entry states backward reads (``chunk_entry_states``).
    ``save_states=False``: the caller drops H (the lean block recomputes it in backward), so a serial
    forward passes its states through a (B, D, N) buffer instead (returned, not the full H)."""
    Bsz, Dtot, L, N, d_group, n_chunks, grid, meta = _launch_shape(u, Bm, cfg)
    flags = dict(HAS_BIAS=bias is not None, SOFTPLUS=softplus, BIDIR=bool(bidir), REVERSE=bool(reverse),
                 HAS_LEN=lengths is not None, **meta)
    dummy = A  # never read: its flag is off
    serial = cfg.serial_forward(meta["BLOCK_N"], n_chunks, u.dtype)
    if serial:  # the states pass from chunk to chunk inside the scan: nothing to compute before it
        rows = (Bsz, Dtot, n_chunks + 1, N) if save_states else (Bsz, Dtot, N)
        H = torch.empty(rows, dtype=torch.float32, device=u.device)
        dg = _channels_per_program(d_group, cfg.dg, Bsz * (Dtot // d_group), cfg.serial_fill)
        grid = (Dtot // dg, Bsz)
        flags.update(DG=dg, SAVE_H=bool(save_states))
    else:
        H = chunk_entry_states(u, delta, A, Bm, bias, softplus, bidir, reverse, cfg, lengths)
    out = torch.empty((Bsz, Dtot, L), dtype=u.dtype, device=u.device)
    args = (u, delta, A, Bm, Cm, D if D is not None else dummy, z if z is not None else u,
            bias if bias is not None else dummy, H, lengths if lengths is not None else dummy, out,
            L, d_group, N, n_chunks,
            *_strides3(u), *_strides3(delta), *Bm.stride(), *Cm.stride(), *_strides3(z), *_strides3(out))
    flags = dict(HAS_D=D is not None, HAS_Z=z is not None, **flags)
    if serial:
        if not (cfg.gluon_forward(meta["BLOCK_N"], u.device)
                and _launch_gluon(gluon_bwd._fwd_serial_gluon, grid, args, flags)):
            _launch(_fwd_serial_columns, grid, *args, **flags)
    elif not (cfg.gluon_forward(meta["BLOCK_N"], u.device)
              and _launch_gluon(gluon_bwd._fwd_scan_gluon, grid, args, dict(flags, PREFETCH=cfg.prefetch))):
        _launch(_fwd_scan_columns if cfg.columns(meta["BLOCK_N"]) else _fwd_scan, grid, *args, **flags)
    return out, H


def scan_backward(dout, u, delta, A, Bm, Cm, D, z, bias, H, softplus, bidir, reverse, cfg, overwrite=False,
                  lengths=None, y_out=None):
    """All gradients of :func:`scan_forward`. ``overwrite``: write ddelta into delta's storage and dz into z's
    (each element is read before it is written, by the same program); callers that own delta and z
    save two (B, D, L) buffers. ``y_out``: a contiguous (B, D, L) buffer (it may be ``dout`` itself)
    that receives the forward's output again, so callers need not save it. ``H=None``: recompute the
    forward's chunk states here (what :func:`chunk_entry_states` returns), with the column layout in the
    same pass as the adjoint's (``columns._both_chunk_states``, ``ScanConfig.fuse_states``)."""
    Bsz, Dtot, L, N, d_group, n_chunks, grid, meta = _launch_shape(u, Bm, cfg)
    if y_out is not None and (y_out.shape != u.shape or not y_out.is_contiguous()):
        raise ValueError("y_out must be a contiguous (B, D, L) buffer")
    *_, bwd_grid, bwd_meta = _launch_shape(u, Bm, cfg, backward=True)
    common = dict(HAS_Z=z is not None, HAS_BIAS=bias is not None, SOFTPLUS=softplus, BIDIR=bool(bidir),
                  REVERSE=bool(reverse), HAS_LEN=lengths is not None)
    flags = dict(common, **meta)
    dummy = A
    lens = lengths if lengths is not None else dummy
    f32 = dict(dtype=torch.float32, device=u.device)
    states = dict(dtype=cfg.state_dtype(u.dtype), device=u.device)
    if n_chunks > 1 and H is None and cfg.fuse_states and cfg.columns(meta["BLOCK_N"]):
        # the forward's chunk sums and the adjoint's in one pass: one exponential per element for both
        S = torch.empty((Bsz, Dtot, n_chunks + 1, N), **states)
        V = torch.empty((Bsz, Dtot, n_chunks + 1, N), **states)
        Sig = torch.empty((Bsz, Dtot, n_chunks), **f32)
        _launch(_both_chunk_states, grid,
                u, delta, A, Bm, Cm, z if z is not None else u, dout, bias if bias is not None else dummy, lens,
                S, V, Sig, L, d_group, N, n_chunks, *_strides3(u), *_strides3(delta), *Bm.stride(), *Cm.stride(),
                *_strides3(z), *_strides3(dout), PREFETCH=cfg.prefetch, **flags)
        H = _carry(S, Sig, A, False, d_group, bidir, reverse)
        K = _carry(V, Sig, A, True, d_group, bidir, reverse)
        del S, V, Sig
    elif n_chunks > 1:
        if H is None:
            H = chunk_entry_states(u, delta, A, Bm, bias, softplus, bidir, reverse, cfg, lengths)
        V = torch.empty((Bsz, Dtot, n_chunks + 1, N), **states)
        Sig = torch.empty((Bsz, Dtot, n_chunks), **f32)
        _launch(_bwd_chunk_state, grid,
                delta, A, Cm, z if z is not None else u, dout, bias if bias is not None else dummy, lens, V, Sig,
                L, d_group, N, n_chunks, *_strides3(delta), *Cm.stride(), *_strides3(z), *_strides3(dout),
                COLUMNS=cfg.columns(meta["BLOCK_N"]), PREFETCH=cfg.prefetch, **flags)
        K = _carry(V, Sig, A, True, d_group, bidir, reverse)
        del V, Sig
    else:
        if H is None:
            H = torch.zeros((Bsz, Dtot, 2, N), **states)
        K = torch.zeros((Bsz, Dtot, 2, N), **states)
    du = torch.empty((Bsz, Dtot, L), dtype=u.dtype, device=u.device)
    if overwrite and delta.is_contiguous() and (z is None or z.is_contiguous()):
        ddelta, dz = delta, z
    else:
        ddelta = torch.empty((Bsz, Dtot, L), dtype=delta.dtype, device=u.device)
        dz = torch.empty((Bsz, Dtot, L), dtype=z.dtype, device=u.device) if z is not None else None
    dA = torch.zeros((Dtot, N), **f32)
    dD = torch.zeros((Dtot,), **f32)
    dbias = torch.zeros((Dtot,), **f32)
    l_bc = _padded_len(L)
    dB = torch.zeros((*Bm.shape[:3], l_bc), **f32)  # (B, G, N, L_BC), contiguous
    dC = torch.zeros((*Cm.shape[:3], l_bc), **f32)
    args = (u, delta, A, Bm, Cm, D if D is not None else dummy, z if z is not None else u,
            bias if bias is not None else dummy, H, K, lens, dout, du, ddelta, dz if dz is not None else du,
            dA, dD, dbias, dB, dC, y_out if y_out is not None else du, L, d_group, N, n_chunks, l_bc,
            *_strides3(u), *_strides3(delta), *Bm.stride(), *Cm.stride(), *_strides3(z), *_strides3(dout))
    flags = dict(HAS_D=D is not None, WRITE_Y=y_out is not None, **common, **bwd_meta)
    # dA's atomic unmasked where every lane holds a state (N == BLOCK_N) and L is a multiple of 16: 2% off
    # the backward at 8 x 30,000; at other L ptxas then spills more (55/62 against 31/38 at 32 x 3,000,
    # 13% slower), so those keep the mask (RESULTS.md sections 21-22)
    gluon_flags = dict(flags, ACC_SMEM=cfg.bwd_smem != "none", BC_SMEM=cfg.bwd_smem == "acc+bc",
                       PREFETCH=cfg.prefetch, FULL_N=cfg.full_n and N == bwd_meta["BLOCK_N"] and L % 16 == 0,
                       SHIFT_A=cfg.bwd_next == "shift")
    if not (cfg.gluon_backward(bwd_meta["BLOCK_N"], u.device)
            and _launch_gluon(gluon_bwd._bwd_scan_gluon, bwd_grid, args, gluon_flags)):
        _launch(_bwd_scan, bwd_grid, *args, **flags)
    return du, ddelta, dA, dB[..., :L], dC[..., :L], dD, dz, dbias


def _launch_gluon(kernel, grid, args, flags) -> bool:
    """Launch a Gluon kernel; False (and the Triton kernel should run) once Gluon failed to compile here.
    Nothing is written before a kernel runs, so a failed compile can fall back."""
    if _GLUON_FAILED:
        return False
    try:
        _launch(kernel, grid, *args, **flags)
    except triton.CompilationError as err:  # a Triton whose Gluon differs from the tested 3.6-3.9
        lines = [line for line in str(getattr(err, "error_message", None) or err).splitlines() if line.strip()]
        _GLUON_FAILED.append(lines[-1].strip() if lines else type(err).__name__)
        warnings.warn(f"the Gluon scan kernels did not compile with Triton {triton.__version__} "
                      f"({_GLUON_FAILED[0]}); using the Triton kernels", RuntimeWarning, stacklevel=3)
        return False
    return True


class SelectiveScanFn(torch.autograd.Function):
    """Autograd wrapper: saves inputs and the fp32 chunk-entry states, nothing of size B*L*D*N."""

    @staticmethod
    def forward(ctx, u, delta, A, Bm, Cm, D, z, delta_bias, delta_softplus, bidir, reverse, cfg, lengths=None):
        A32 = A.float().contiguous()
        D32 = D.float().contiguous() if D is not None else None
        bias32 = delta_bias.float().contiguous() if delta_bias is not None else None
        Bm, Cm = aligned_rows(Bm, cfg), aligned_rows(Cm, cfg)
        out, H = scan_forward(u, delta, A32, Bm, Cm, D32, z, bias32, delta_softplus, bidir, reverse, cfg, lengths)
        ctx.save_for_backward(u, delta, A32, Bm, Cm, D32, z, bias32, H, lengths)
        ctx.flags = (delta_softplus, bidir, reverse, cfg)
        ctx.dtypes = (A.dtype, D.dtype if D is not None else None,
                      delta_bias.dtype if delta_bias is not None else None)
        return out

    @staticmethod
    def backward(ctx, dout):
        u, delta, A, Bm, Cm, D, z, bias, H, lengths = ctx.saved_tensors
        softplus, bidir, reverse, cfg = ctx.flags
        du, ddelta, dA, dB, dC, dD, dz, dbias = scan_backward(
            dout, u, delta, A, Bm, Cm, D, z, bias, H, softplus, bidir, reverse, cfg, lengths=lengths)
        a_dtype, d_dtype, b_dtype = ctx.dtypes
        return (du, ddelta, dA.to(a_dtype), dB.to(Bm.dtype), dC.to(Cm.dtype),
                dD.to(d_dtype) if D is not None else None, dz,
                dbias.to(b_dtype) if bias is not None else None, None, None, None, None, None)


def scan_groups(u, B, C, bidirectional: bool, lengths):
    """B, C as (B, G, N, L) groups and lengths as contiguous int64 on u's device, checked."""
    Bm = B if B.dim() == 4 else B.unsqueeze(1)
    Cm = C if C.dim() == 4 else C.unsqueeze(1)
    if bidirectional and (Bm.shape[1] != 2 or Cm.shape[1] != 2):
        raise ValueError("bidirectional scan needs B, C of shape (B, 2, N, L)")
    if u.shape[1] % Bm.shape[1]:
        raise ValueError(f"{u.shape[1]} channels do not split into {Bm.shape[1]} B/C groups")
    if lengths is not None:
        lengths = lengths.to(device=u.device, dtype=torch.int64).contiguous()
    return Bm, Cm, lengths


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          *, reverse: bool = False, bidirectional: bool = False,
                          config: ScanConfig | None = None, lengths: torch.Tensor | None = None):
    """Triton selective scan; arguments and shapes as ``selective_scan_reference``.

    ``reverse``: scan from t = L-1 down to 0 (as the reference on time-flipped inputs).
    ``bidirectional``: u, delta, z are (B, 2D, L), B and C (B, 2, N, L): channels [0, D) use group 0
    forwards, channels [D, 2D) use group 1 and run time-reversed, all in one launch per kernel.
    B, C may also be (B, G, N, L) with G groups of D/G channels (as mamba-ssm's ngroups).
    ``lengths`` (B,): valid steps per row; a reversed channel starts at its row's last valid step.
    """
    cfg = config or DEFAULT_CONFIG
    Bm, Cm, lengths = scan_groups(u, B, C, bidirectional, lengths)
    out = SelectiveScanFn.apply(u, delta, A, Bm, Cm, D, z, delta_bias, bool(delta_softplus),
                                bool(bidirectional), bool(reverse), cfg, lengths)
    return out
