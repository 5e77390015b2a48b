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
code on disk (``cache=True``: the first call in a fresh environment compiles for a few seconds).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic

from helix.ops.selective_scan.reference import _check_shapes

CHUNK = 64  # steps per saved state; (CHUNK + 1) x N states and CHUNK x N decays stay in L1
_TASKS_PER_THREAD = 8  # backward work items per thread: balance when another process takes a core

# fp32 constants: a Python float literal would promote the arithmetic (and halve the vector width)
_F0, _F1, _HALF = np.float32(0.0), np.float32(1.0), np.float32(0.5)
_LOG2E = np.float32(1.4426950408889634)
_EXP_LO, _EXP_HI = np.float32(-126.0), np.float32(127.0)
_SOFTPLUS_HI = np.float32(20.0)  # torch's softplus threshold: above it softplus(v) = v
# 2^f = e^(f ln 2) on [-1/2, 1/2]: Taylor to degree 7, relative error < 1e-8 (below fp32's ulp)
_P1, _P2, _P3 = np.float32(0.6931471805599453), np.float32(0.2402265069591007), np.float32(0.05550410866482158)
_P4, _P5 = np.float32(0.009618129107628477), np.float32(0.0013333558146428443)
_P6, _P7 = np.float32(0.00015403530393381606), np.float32(1.525273380405984e-05)


@intrinsic
def _bits_as_f32(typingctx, bits):
    """Reinterpret the low 32 bits of an integer as an fp32 (an LLVM bitcast, so it vectorises)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.trunc(args[0], ir.IntType(32)) if bits.bitwidth > 32 else args[0],
                               ir.FloatType())

    return types.float32(bits), codegen


@njit(fastmath=True, cache=True, inline="always")
def _exp(x):
    """exp for fp32 that LLVM vectorises: 2^k by building the exponent bits, 2^f by a polynomial.

    Inputs are clamped to e^[-126 ln2, 127 ln2]: the smallest result is 2^-126 (not 0), far below
    anything that reaches the state or a gradient at fp32 precision.
    """
    t = x * _LOG2E
    t = _EXP_LO if t < _EXP_LO else (_EXP_HI if t > _EXP_HI else t)
    k = np.floor(t + _HALF)
    f = t - k
    p = _P7 * f + _P6
    p = p * f + _P5
    p = p * f + _P4
    p = p * f + _P3
    p = p * f + _P2
    p = p * f + _P1
    p = p * f + _F1
    return p * _bits_as_f32((np.int32(k) + np.int32(127)) << np.int32(23))


@njit(fastmath=True, cache=True, inline="always")
def _step_size(v, softplus):
    """delta + bias (already summed in v), then softplus without overflow."""
    if softplus and v <= _SOFTPLUS_HI:
        return np.float32(np.log1p(_exp(v)))
    return v


@njit(parallel=True, fastmath=True, cache=True)
def _scan_fwd(u, delta, A, Bt, Ct, Dv, z, bias, reverse, softplus, has_z, out, starts, save):
    """out (B, D, L) = gated scan output; starts (B, D, n_chunks, N) = state entering each chunk.

    Bt, Ct: (B, G, L, N) (time-major per group, so one step's N values are contiguous);
    reverse: (G,) bool; Dv, bias: zeros when absent; z, starts: ignored unless has_z / save.
    """
    Bsz, Dch, L = u.shape
    N = A.shape[1]
    E = Dch // Bt.shape[1]
    for row in prange(Bsz * Dch):
        b = row // Dch
        d = row - b * Dch
        g = d // E
        rev = reverse[g]
        x = np.zeros(N, np.float32)
        Ad = A[d]
        for tau in range(L):
            t = L - 1 - tau if rev else tau
            if save and tau % CHUNK == 0:
                starts[b, d, tau // CHUNK, :] = x
            dt = _step_size(delta[b, d, t] + bias[d], softplus)
            uu = u[b, d, t]
            dtu = dt * uu
            Bv = Bt[b, g, t]
            Cv = Ct[b, g, t]
            y = _F0
            for n in range(N):
                xn = _exp(dt * Ad[n]) * x[n] + dtu * Bv[n]
                x[n] = xn
                y += xn * Cv[n]
            y += Dv[d] * uu
            if has_z:
                zz = z[b, d, t]
                y *= zz / (_F1 + _exp(-zz))
            out[b, d, t] = y


@njit(parallel=True, fastmath=True, cache=True)
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
        xs = np.empty((CHUNK + 1, N), np.float32)  # xs[k + 1] = state after step k; xs[0] = chunk start
        dec = np.empty((CHUNK, N), np.float32)
        dts = np.empty(CHUNK, np.float32)
        carry = np.empty(N, np.float32)  # exp(delta_{t+1} A) * g_{t+1}: adjoint from the later steps
        dA_row = np.empty(N, np.float32)
        dBp = dB_part[p, b]
        dCp = dC_part[p, b]
        Btg = Bt[b, g]
        Ctg = Ct[b, g]
        for d in range(d0, d1):
            Ad = A[d]
            carry[:] = _F0
            dA_row[:] = _F0
            dD_acc = _F0
            dbias_acc = _F0
            for c in range(n_chunks - 1, -1, -1):
                tau0 = c * CHUNK
                nk = min(L, tau0 + CHUNK) - tau0
                xs[0, :] = starts[b, d, c]
                for k in range(nk):
                    t = L - 1 - (tau0 + k) if rev else tau0 + k
                    dt = _step_size(delta[b, d, t] + bias[d], softplus)
                    dts[k] = dt
                    dtu = dt * u[b, d, t]
                    Bv = Btg[t]
                    for n in range(N):
                        a = _exp(dt * Ad[n])
                        dec[k, n] = a
                        xs[k + 1, n] = a * xs[k, n] + dtu * Bv[n]
                for k in range(nk - 1, -1, -1):
                    t = L - 1 - (tau0 + k) if rev else tau0 + k
                    dt = dts[k]
                    uu = u[b, d, t]
                    Bv = Btg[t]
                    Cv = Ctg[t]
                    go = dout[b, d, t]
                    if has_z:
                        y = _F0
                        for n in range(N):
                            y += Cv[n] * xs[k + 1, n]
                        zz = z[b, d, t]
                        sg = _F1 / (_F1 + _exp(-zz))
                        dz[b, d, t] = go * (y + Dv[d] * uu) * sg * (_F1 + zz * (_F1 - sg))
                        dy = go * zz * sg
                    else:
                        dy = go
                    dtu = dt * uu
                    gB = _F0
                    gq = _F0
                    dCrow = dCp[t]
                    dBrow = dBp[t]
                    for n in range(N):
                        gn = dy * Cv[n] + carry[n]  # dL/dx_t
                        dCrow[n] += dy * xs[k + 1, n]
                        dBrow[n] += gn * dtu
                        gB += gn * Bv[n]
                        q = gn * dec[k, n] * xs[k, n]  # dL/d(dt * A_n)
                        gq += q * Ad[n]
                        dA_row[n] += q * dt
                        carry[n] = dec[k, n] * gn
                    dD_acc += dy * uu
                    du[b, d, t] = dt * gB + dy * Dv[d]
                    ddt = uu * gB + gq
                    if softplus:
                        v = delta[b, d, t] + bias[d]
                        if v <= _SOFTPLUS_HI:
                            ddt *= _F1 / (_F1 + _exp(-v))
                    ddelta[b, d, t] = ddt
                    dbias_acc += ddt
            dA_part[b, d, :] = dA_row
            dD_part[b, d] = dD_acc
            dbias_part[b, d] = dbias_acc


def _set_threads() -> int:
    """Run numba's parallel loops on torch's thread count (``--threads``, torch.set_num_threads)."""
    n = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    return n


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to(torch.float32).contiguous()


class _Prepared:
    """The inputs as the kernels take them: contiguous fp32, B and C as (B, G, L, N)."""

    def __init__(self, u, delta, A, B, C, D, z, delta_bias, bidirectional):
        if not bidirectional:
            B, C = B.unsqueeze(1), C.unsqueeze(1)  # (B, 1, N, L)
        zeros = torch.zeros(u.shape[1])
        self.has_z = z is not None
        self.tensors = (
            _f32(u), _f32(delta), _f32(A), _f32(B.transpose(-1, -2)), _f32(C.transpose(-1, -2)),
            zeros if D is None else _f32(D),
            _f32(z) if z is not None else torch.empty(1, 1, 1),  # ignored by the kernels
            zeros if delta_bias is None else _f32(delta_bias),
            torch.tensor([False, True][:B.shape[1]]),  # group 1 of a bidirectional scan runs backwards
        )

    def arrays(self):
        return tuple(x.numpy() for x in self.tensors)


def _forward(p: _Prepared, softplus: bool, save: bool):
    """Run the forward kernel; with ``save`` also return the chunk-start states for backward."""
    u, A = p.tensors[0], p.tensors[2]
    Bsz, Dch, L = u.shape
    out = torch.empty(Bsz, Dch, L)
    # without grad a placeholder: only the (N,) state of each row in flight exists, O(B*D*N) in all
    starts = torch.empty(Bsz, Dch, (L + CHUNK - 1) // CHUNK, A.shape[1]) if save else torch.empty(1, 1, 1, 1)
    _set_threads()
    _scan_fwd(*p.arrays(), softplus, p.has_z, out.numpy(), starts.numpy(), save)
    return out, starts


def _backward(p: _Prepared, softplus: bool, starts: torch.Tensor, dout: torch.Tensor):
    """All gradients in fp32: du, ddelta, dA, dB (B, G, N, L), dC, dD, dz (or None), ddelta_bias."""
    u = p.tensors[0]
    Bsz, Dch, L = u.shape
    N, G = p.tensors[2].shape[1], p.tensors[3].shape[1]
    E = Dch // G
    threads = _set_threads()
    # enough (batch, channel block) tasks to balance the threads; each block owns a dB/dC slice
    per_group = min(E, max(1, -(-_TASKS_PER_THREAD * threads // (Bsz * G))))
    block = -(-E // per_group)
    per_group = -(-E // block)
    du, ddelta = torch.empty_like(u), torch.empty_like(u)
    dz = torch.empty_like(u) if p.has_z else torch.empty(1, 1, 1)
    dB_part = torch.zeros(G * per_group, Bsz, L, N)
    dC_part = torch.zeros(G * per_group, Bsz, L, N)
    dA_part = torch.empty(Bsz, Dch, N)
    dD_part, dbias_part = torch.empty(Bsz, Dch), torch.empty(Bsz, Dch)
    _scan_bwd(*p.arrays(), softplus, p.has_z, starts.numpy(), _f32(dout).numpy(), block,
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


def selective_scan_cpu(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       bidirectional=False):
    """The selective scan on CPU tensors; same arguments, shapes and result as the reference.

    bidirectional=False: u, delta, z (B, D, L), B, C (B, N, L), as :func:`selective_scan_reference`.
    bidirectional=True: B, C (B, 2, N, L), channels [D/2, D) scanned backwards in time, as
    :func:`selective_scan_bidirectional_reference`. Computes in fp32, returns u's dtype. Without
    grad (torch.no_grad or no input requiring it) no chunk states are kept.
    """
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
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    if torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in inputs):
        return _ScanCpuFn.apply(*inputs, bool(delta_softplus), bool(bidirectional))
    p = _Prepared(*inputs, bidirectional)
    return _forward(p, bool(delta_softplus), save=False)[0].to(u.dtype)
