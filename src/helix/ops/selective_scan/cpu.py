"""Selective scan on the CPU, compiled with numba: forward, backward, both directions in one call.

    x_t = exp(delta_t * A) * x_{t-1} + delta_t * B_t * u_t        state x: (N,) per (b, d) row, fp32
    y_t = <C_t, x_t> + D * u_t,   then   y_t *= silu(z_t),   delta_t = softplus(delta_t + delta_bias)

Shapes: u, delta, z (B, D, L); A (D, N); D, delta_bias (D,); B, C (B, G, N, L) with G = 1 (one
direction) or G = 2 (bidirectional: channels [D/2, D) read B[:, 1], C[:, 1] and walk time backwards,
i.e. Flip(scan(Flip(.))) without flips). :mod:`.reference` is the specification.

Why it is fast: the reference streams the whole (B, D, N) state through memory at every time step;
here each (b, d) row keeps its N states in a local array (registers/L1) and walks time once, the
rows run in parallel (``prange``) and the N-loop is vectorised, exp included (``_exp`` below:
numba's wheels carry no vector math library, so a scalar ``expf`` call would dominate).

Backward: the forward saves only the state entering every chunk of ``CHUNK`` steps (B, D, L/CHUNK, N);
backward recomputes one chunk's states and decays into a local (CHUNK, N) buffer and walks it in
reverse. The reductions across rows (dB, dC over channels; dA, dD, ddelta_bias over the batch) go to
per-task partial buffers summed afterwards in torch: no atomics, and bitwise reproducible for a
given thread count. Without grad, :func:`selective_scan_cpu` keeps no chunk states at all.

numba (not C++/Cython) because it installs from wheels with no compiler and caches the compiled
code on disk (``cache=True``: the first import in a fresh environment compiles, ~13 s on 2 cores;
later processes load it from ``__pycache__``).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import njit, prange
from numba.core import types

from helix.ops.cpu_common import exp_fast, f32, f32_view, torch_threads
from helix.ops.selective_scan.reference import _check_shapes

# loading the compiled parallel kernels can start numba's OpenMP pool, which may reset a shared
# OpenMP runtime's thread count (torch's): restored at the end of this module
_TORCH_THREADS_AT_IMPORT = torch.get_num_threads()
CHUNK = 64  # steps per saved state; (CHUNK + 1) x N states and CHUNK x N decays stay in L1
_TASKS_PER_THREAD = 8  # backward work items per thread: balance when another process takes a core

# fp32 constants: a Python float literal would promote the arithmetic (and halve the vector width)
_F0, _F1, _F2, _HALF = np.float32(0.0), np.float32(1.0), np.float32(2.0), np.float32(0.5)
_LOG2E = np.float32(1.4426950408889634)
_SOFTPLUS_HI = np.float32(20.0)  # torch's softplus threshold: above it softplus(v) = v
# 2^f = e^(f ln 2) on [-1/2, 1/2]: Taylor to degree 7, relative error < 1e-8 (below fp32's ulp)
# log1p(w) = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...)
_L3, _L5, _L7, _L9 = np.float32(1 / 3), np.float32(1 / 5), np.float32(1 / 7), np.float32(1 / 9)
_L11, _L13 = np.float32(1 / 11), np.float32(1 / 13)


@njit(fastmath=True, cache=True, inline="always")
def _sigmoid(v):
    return _F1 / (_F1 + exp_fast(-v))


@njit(fastmath=True, cache=True, inline="always")
def _softplus(v):
    """log(1 + e^v) = max(v, 0) + log1p(e^-|v|), vectorisable; v itself above torch's threshold.

    log1p(w) for w in (0, 1] as 2 atanh(s), s = w / (2 + w) <= 1/3: the odd series to s^13 leaves
    a relative error below 2e-8.
    """
    w = exp_fast(-abs(v))
    s = w / (_F2 + w)
    s2 = s * s
    q = _L13 * s2 + _L11
    q = q * s2 + _L9
    q = q * s2 + _L7
    q = q * s2 + _L5
    q = q * s2 + _L3
    q = q * s2 + _F1
    r = (v if v > _F0 else _F0) + _F2 * s * q
    return v if v > _SOFTPLUS_HI else r


@njit(fastmath=True, cache=True, inline="always")
def _chunk_bounds(c, L, rev):
    """Memory range [lo, hi) of chunk c; a time-reversed row's chunk 0 holds its last steps."""
    a = c * CHUNK
    b = min(L, a + CHUNK)
    return (L - b, L - a) if rev else (a, b)


@njit(fastmath=True, cache=True, inline="always")
def _step_sizes(delta_row, u_row, bias_d, softplus, lo, nk, dt, dtu):
    """dt[k] = softplus(delta + bias), dtu[k] = dt * u for the chunk's steps (memory order)."""
    for k in range(nk):
        v = delta_row[lo + k] + bias_d
        if softplus:
            v = _softplus(v)
        dt[k] = v
        dtu[k] = v * u_row[lo + k]


# One compiled signature per kernel: the (B, D, L) arrays as any-stride ('A') views, so the mixer's
# transposed (B, L, D) tensors are read in place (no copies) and no layout mix triggers a recompile
_BDL, _C1, _C2, _C3, _C4 = (types.Array(types.float32, 3, "A"), types.float32[::1], types.float32[:, ::1],
                            types.float32[:, :, ::1], types.float32[:, :, :, ::1])
_FLAGS = types.Array(types.boolean, 1, "C")
_FWD_SIG = types.void(_BDL, _BDL, _C2, _C4, _C4, _C1, _BDL, _C1, _FLAGS, types.boolean, types.boolean, _BDL,
                      _C4, types.boolean)
_BWD_SIG = types.void(_BDL, _BDL, _C2, _C4, _C4, _C1, _BDL, _C1, _FLAGS, types.boolean, types.boolean, _C4, _BDL,
                      types.int64, _BDL, _BDL, _BDL, _C4, _C4, _C3, _C2, _C2)


@njit(_FWD_SIG, parallel=True, fastmath=True, cache=True)
def _scan_fwd(u, delta, A, Bt, Ct, Dv, z, bias, reverse, softplus, has_z, out, starts, save):
    """out (B, D, L) = gated scan output; starts (B, D, n_chunks, N) = state entering each chunk.

    Bt, Ct: (B, G, L, N) (time-major per group, so one step's N values are contiguous);
    reverse: (G,) bool; Dv, bias: zeros when absent; z, starts: ignored unless has_z / save.
    Per chunk: a vectorised pass over time for the step sizes, the sequential pass (vectorised over
    N), a vectorised pass for the D skip and the gate.
    """
    Bsz, Dch, L = u.shape
    N = A.shape[1]
    E = Dch // Bt.shape[1]
    n_chunks = (L + CHUNK - 1) // CHUNK
    for row in prange(Bsz * Dch):
        b = row // Dch
        d = row - b * Dch
        g = d // E
        rev = reverse[g]
        x = np.zeros(N, np.float32)
        Ad = A[d].copy()
        dt = np.empty(CHUNK, np.float32)
        dtu = np.empty(CHUNK, np.float32)
        yb = np.empty(CHUNK, np.float32)
        u_row, o_row, z_row = u[b, d], out[b, d], z[b, d] if has_z else z[0, 0]
        Btg, Ctg = Bt[b, g], Ct[b, g]
        for c in range(n_chunks):
            lo, hi = _chunk_bounds(c, L, rev)
            nk = hi - lo
            if save:
                starts[b, d, c, :] = x
            _step_sizes(delta[b, d], u_row, bias[d], softplus, lo, nk, dt, dtu)
            for i in range(nk):
                k = nk - 1 - i if rev else i
                dtk, dtuk = dt[k], dtu[k]
                Bv, Cv = Btg[lo + k], Ctg[lo + k]
                y = _F0
                for n in range(N):
                    xn = exp_fast(dtk * Ad[n]) * x[n] + dtuk * Bv[n]
                    x[n] = xn
                    y += xn * Cv[n]
                yb[k] = y
            for k in range(nk):
                y = yb[k] + Dv[d] * u_row[lo + k]
                if has_z:
                    zz = z_row[lo + k]
                    y *= zz * _sigmoid(zz)
                o_row[lo + k] = y


@njit(_BWD_SIG, parallel=True, fastmath=True, cache=True)
def _scan_bwd(u, delta, A, Bt, Ct, Dv, z, bias, reverse, softplus, has_z, starts, dout, block,
              du, ddelta, dz, dB_part, dC_part, dA_part, dD_part, dbias_part):
    """Gradients of :func:`_scan_fwd`, one task per (batch, block of channels of one group).

    du, ddelta, dz: (B, D, L); dA_part (B, D, N), dD_part and dbias_part (B, D): per row, summed over
    the batch by the caller; dB_part, dC_part (G * blocks, B, L, N), zeroed by the caller: one slice
    per channel block, summed over blocks by the caller.
    """
    Bsz, Dch, L = u.shape
    N = A.shape[1]
    G = Bt.shape[1]
    E = Dch // G
    n_chunks = starts.shape[2]
    per_group = (E + block - 1) // block
    for task in prange(Bsz * G * per_group):
        b = task // (G * per_group)
        p = task - b * G * per_group  # partial slice: block j of group g
        g = p // per_group
        d0 = g * E + (p - g * per_group) * block
        d1 = min(d0 + block, (g + 1) * E)
        rev = reverse[g]
        # indexed by logical step i: xs[i + 1] = state after step i, xs[0] = chunk start; dec = decay
        xs = np.empty((CHUNK + 1, N), np.float32)
        dec = np.empty((CHUNK, N), np.float32)
        # indexed by memory offset k in the chunk
        dt = np.empty(CHUNK, np.float32)
        dtu = np.empty(CHUNK, np.float32)
        yb = np.empty(CHUNK, np.float32)
        dyb = np.empty(CHUNK, np.float32)
        gBb = np.empty(CHUNK, np.float32)
        gqb = np.empty(CHUNK, np.float32)
        carry = np.empty(N, np.float32)  # exp(delta_{t+1} A) * g_{t+1}: adjoint from the later steps
        dA_row = np.empty(N, np.float32)
        dBp, dCp = dB_part[p, b], dC_part[p, b]
        Btg, Ctg = Bt[b, g], Ct[b, g]
        for d in range(d0, d1):
            Ad = A[d].copy()
            Dd, bias_d = Dv[d], bias[d]
            u_row, dl_row, go_row = u[b, d], delta[b, d], dout[b, d]
            carry[:] = _F0
            dA_row[:] = _F0
            dD_acc = _F0
            dbias_acc = _F0
            for c in range(n_chunks - 1, -1, -1):
                lo, hi = _chunk_bounds(c, L, rev)
                nk = hi - lo
                _step_sizes(dl_row, u_row, bias_d, softplus, lo, nk, dt, dtu)
                xs[0, :] = starts[b, d, c]
                for i in range(nk):  # recompute the chunk's states and decays
                    k = nk - 1 - i if rev else i
                    dtk, dtuk = dt[k], dtu[k]
                    Bv, Cv = Btg[lo + k], Ctg[lo + k]
                    y = _F0
                    for n in range(N):
                        a = exp_fast(dtk * Ad[n])
                        dec[i, n] = a
                        xn = a * xs[i, n] + dtuk * Bv[n]
                        xs[i + 1, n] = xn
                        y += xn * Cv[n]
                    yb[k] = y
                for k in range(nk):  # the gate: dy = dout * silu(z), dz
                    go = go_row[lo + k]
                    if has_z:
                        zz = z[b, d, lo + k]
                        sg = _sigmoid(zz)
                        dz[b, d, lo + k] = go * (yb[k] + Dd * u_row[lo + k]) * sg * (_F1 + zz * (_F1 - sg))
                        go = go * zz * sg
                    dyb[k] = go
                    dD_acc += go * u_row[lo + k]
                for i in range(nk - 1, -1, -1):  # the adjoint recurrence, backwards in logical time
                    k = nk - 1 - i if rev else i
                    dy, dtk, dtuk = dyb[k], dt[k], dtu[k]
                    Bv, Cv = Btg[lo + k], Ctg[lo + k]
                    dBrow, dCrow = dBp[lo + k], dCp[lo + k]
                    gB = _F0
                    gq = _F0
                    for n in range(N):
                        gn = dy * Cv[n] + carry[n]  # dL/dx_t
                        dCrow[n] += dy * xs[i + 1, n]
                        dBrow[n] += gn * dtuk
                        gB += gn * Bv[n]
                        q = gn * dec[i, n] * xs[i, n]  # dL/d(dt * A_n)
                        gq += q * Ad[n]
                        dA_row[n] += q * dtk
                        carry[n] = dec[i, n] * gn
                    gBb[k] = gB
                    gqb[k] = gq
                for k in range(nk):
                    t = lo + k
                    du[b, d, t] = dt[k] * gBb[k] + dyb[k] * Dd
                    ddt = u_row[t] * gBb[k] + gqb[k]
                    if softplus:
                        v = dl_row[t] + bias_d
                        ddt = ddt if v > _SOFTPLUS_HI else ddt * _sigmoid(v)
                    ddelta[b, d, t] = ddt
                    dbias_acc += ddt
            dA_part[b, d, :] = dA_row
            dD_part[b, d] = dD_acc
            dbias_part[b, d] = dbias_acc


def _empty_like_bdl(x: torch.Tensor) -> torch.Tensor:
    """(B, D, L) fp32 laid out as x: token-major (a (B, L, D) buffer's transpose) when x is, so
    the consumers of a transposed (B, L, D) activation get their layout back without a copy."""
    Bsz, Dch, L = x.shape
    return torch.empty(Bsz, L, Dch).transpose(1, 2) if x.stride(-1) != 1 and L > 1 else torch.empty(Bsz, Dch, L)


class _Prepared:
    """The inputs as the kernels take them: contiguous fp32, B and C as (B, G, L, N)."""

    def __init__(self, u, delta, A, B, C, D, z, delta_bias, bidirectional):
        if not bidirectional:
            B, C = B.unsqueeze(1), C.unsqueeze(1)  # (B, 1, N, L)
        zeros = torch.zeros(u.shape[1])
        self.has_z = z is not None
        self.tensors = (
            f32_view(u), f32_view(delta), f32(A), f32(B.transpose(-1, -2)), f32(C.transpose(-1, -2)),
            zeros if D is None else f32(D),
            f32_view(z) if z is not None else torch.empty(1, 1, 1),  # ignored by the kernels
            zeros if delta_bias is None else f32(delta_bias),
            torch.tensor([False, True][:B.shape[1]]),  # group 1 of a bidirectional scan runs backwards
        )

    def arrays(self):
        return tuple(x.numpy() for x in self.tensors)


def _forward(p: _Prepared, softplus: bool, save: bool):
    """Run the forward kernel; with ``save`` also return the chunk-start states for backward."""
    u, A = p.tensors[0], p.tensors[2]
    Bsz, Dch, L = u.shape
    out = _empty_like_bdl(u)
    # without grad a placeholder: only the (N,) state of each row in flight exists, O(B*D*N) in all
    starts = torch.empty(Bsz, Dch, (L + CHUNK - 1) // CHUNK, A.shape[1]) if save else torch.empty(1, 1, 1, 1)
    with torch_threads():
        _scan_fwd(*p.arrays(), softplus, p.has_z, out.numpy(), starts.numpy(), save)
    return out, starts


def _backward(p: _Prepared, softplus: bool, starts: torch.Tensor, dout: torch.Tensor):
    """All gradients in fp32: du, ddelta, dA, dB (B, G, N, L), dC, dD, dz (or None), ddelta_bias."""
    u = p.tensors[0]
    Bsz, Dch, L = u.shape
    N, G = p.tensors[2].shape[1], p.tensors[3].shape[1]
    E = Dch // G
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    # enough (batch, channel block) tasks to balance the threads; each block owns a dB/dC slice
    per_group = min(E, max(1, -(-_TASKS_PER_THREAD * threads // (Bsz * G))))
    block = -(-E // per_group)
    per_group = -(-E // block)
    du, ddelta = _empty_like_bdl(u), _empty_like_bdl(p.tensors[1])
    dz = _empty_like_bdl(p.tensors[6]) if p.has_z else torch.empty(1, 1, 1)
    dB_part = torch.zeros(G * per_group, Bsz, L, N)
    dC_part = torch.zeros(G * per_group, Bsz, L, N)
    dA_part = torch.empty(Bsz, Dch, N)
    dD_part, dbias_part = torch.empty(Bsz, Dch), torch.empty(Bsz, Dch)
    with torch_threads():
        _scan_bwd(*p.arrays(), softplus, p.has_z, starts.numpy(), f32_view(dout).numpy(), block,
                  du.numpy(), ddelta.numpy(), dz.numpy(), dB_part.numpy(), dC_part.numpy(), dA_part.numpy(),
                  dD_part.numpy(), dbias_part.numpy())

    def per_group_sum(part):  # (G * per_group, B, L, N) -> (B, G, N, L)
        return part.view(G, per_group, Bsz, L, N).sum(1).permute(1, 0, 3, 2)

    return (du, ddelta, dA_part.sum(0), per_group_sum(dB_part), per_group_sum(dC_part), dD_part.sum(0),
            dz if p.has_z else None, dbias_part.sum(0))


class _ScanCpuFn(torch.autograd.Function):
    """The whole scan (prologue, recurrence, epilogue) as one function; saves inputs + chunk states."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus, bidirectional):
        p = _Prepared(u, delta, A, B, C, D, z, delta_bias, bidirectional)
        out, starts = _forward(p, softplus, save=True)
        # the original tensors, not the fp32 copies: half-precision inputs stay half in memory
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, starts)
        ctx.flags = softplus, bidirectional
        return out.to(u.dtype)

    @staticmethod
    def backward(ctx, dout):
        u, delta, A, B, C, D, z, delta_bias, starts = ctx.saved_tensors
        softplus, bidirectional = ctx.flags
        p = _Prepared(u, delta, A, B, C, D, z, delta_bias, bidirectional)
        du, ddelta, dA, dB, dC, dD, dz, dbias = _backward(p, softplus, starts, dout)
        if not bidirectional:
            dB, dC = dB[:, 0], dC[:, 0]
        grads = (du, ddelta, dA, dB, dC, dD, dz, dbias)
        inputs = (u, delta, A, B, C, D, z, delta_bias)
        return (*(None if g is None or x is None else g.to(x.dtype) for g, x in zip(grads, inputs)), None, None)


def check_scan_args(u, delta, A, B, C, D, z, delta_bias, bidirectional: bool) -> None:
    """Shapes (ValueError) and device (RuntimeError) of the numba scan's arguments."""
    if bidirectional:
        if u.dim() != 3 or u.shape[1] % 2:
            raise ValueError(f"u must be (B, 2E, L) with an even channel count, got {tuple(u.shape)}")
        if B.dim() != 4 or B.shape[1] != 2 or C.shape != B.shape:
            raise ValueError(f"B and C must be (B, 2, N, L), got {tuple(B.shape)} and {tuple(C.shape)}")
        _check_shapes(u, delta, A, B[:, 0], C[:, 0], D, z, delta_bias)
    else:
        _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    if u.device.type != "cpu":
        raise RuntimeError(f"the numba selective scan runs on CPU tensors, got {u.device}")


def selective_scan_cpu(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       bidirectional=False):
    """The selective scan on CPU tensors; same arguments, shapes and result as the reference.

    bidirectional=False: u, delta, z (B, D, L), B, C (B, N, L), as :func:`selective_scan_reference`.
    bidirectional=True: B, C (B, 2, N, L), channels [D/2, D) scanned backwards in time, as
    :func:`selective_scan_bidirectional_reference`. Computes in fp32, returns u's dtype. Without
    grad (torch.no_grad or no input requiring it) no chunk states are kept.
    """
    check_scan_args(u, delta, A, B, C, D, z, delta_bias, bidirectional)
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    if torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in inputs):
        return _ScanCpuFn.apply(*inputs, bool(delta_softplus), bool(bidirectional))
    p = _Prepared(*inputs, bidirectional)
    return _forward(p, bool(delta_softplus), save=False)[0].to(u.dtype)


if torch.get_num_threads() != _TORCH_THREADS_AT_IMPORT:
    torch.set_num_threads(_TORCH_THREADS_AT_IMPORT)
