"""Depthwise causal conv1d + SiLU on the CPU, compiled with numba: forward and backward.

    out[b, c, t] = silu(bias[c] + sum_j w[c, j] x[b, c, t - (K-1) + j])

Shapes: x (B, C, L); weight (C, K); bias (C,) or None. With ``bidirectional=True`` channels
[C//2, C) are anti-causal (x[t .. t+K-1], kernel reversed): Flip(conv(Flip(x))) without the flips.
:func:`helix.ops.causal_conv.reference.causal_conv1d_silu_reference` is the specification.

Two layouts, each read where it lies (the output and dx take x's layout):

- channel-major ``(B, C, L)`` rows (``_conv_fwd``/``_conv_bwd``): one (b, c) row per parallel task,
  time innermost; a tap is a shifted multiply-add over the row;
- token-major, the transpose of a ``(B, L, C)`` buffer as the mixer passes it (``_tm`` kernels):
  one (b, 64-step chunk) per parallel task, channels innermost; a tap is a multiply-add of two rows.
  The mixer's x is the first half of its in_proj output, rows 2C apart: the kernels read the
  (B, L, 2C) rows in place and use the first C channels, instead of copying them out.

What makes the loops vectorise (each was measured to cost 2-6x when missing):
:data:`helix.ops.cpu_common.VECTOR_JIT` (numba's default error model stops LLVM vectorising a loop
with a division, SiLU's included); inner loops index views from 0 (numba may take an index such as
``t - shift`` for negative and wraps it, per element); C-contiguous signatures (a runtime-strided
row does not vectorise). SiLU and its derivative are fused into the passes that make the
pre-activation; backward recomputes it. dweight and dbias go to per-task partials summed over the
tasks in torch (no atomics).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange
from numba.core import types

from helix.ops.cpu_common import VECTOR_JIT, exp_fast, f32, f32_view, torch_threads

# loading the compiled parallel kernels can start numba's OpenMP pool, which may reset a shared
# OpenMP runtime's thread count (torch's): restored at the end of this module
_TORCH_THREADS_AT_IMPORT = torch.get_num_threads()
_F0, _F1 = np.float32(0.0), np.float32(1.0)
CHUNK = 64  # time steps per token-major task: parallelism for small B, a backward tile that fits L2


@njit(inline="always", **VECTOR_JIT)
def _sigmoid(v):
    """1 / (1 + e^-v) with the vectorisable exp of :mod:`helix.ops.cpu_common`."""
    return _F1 / (_F1 + exp_fast(-v))


@njit(inline="always", **VECTOR_JIT)
def _silu_grad(v, go):
    """go * silu'(v) = go * s (1 + v (1 - s)), s = sigmoid(v)."""
    s = _sigmoid(v)
    return go * s * (_F1 + v * (_F1 - s))


# ---- channel-major: x, out, dout, dx (B, C, L) C-contiguous

_BCL = types.float32[:, :, ::1]
_FWD_SIG = types.void(_BCL, types.float32[:, ::1], types.float32[::1], types.int64, _BCL)
_BWD_SIG = types.void(_BCL, types.float32[:, ::1], types.float32[::1], types.int64, _BCL, _BCL,
                      types.float32[:, :, ::1], types.float32[:, ::1])


@njit(inline="always", **VECTOR_JIT)
def _tap_views(a, b, shift, anti):
    """(a[t], b[t - shift]) for t in [shift, L) (causal), or (a[t], b[t + shift]) for t in [0, L - shift)."""
    n = a.shape[0] - shift
    if anti:
        return a[:n], b[shift:]
    return a[shift:], b[:n]


@njit(inline="always", **VECTOR_JIT)
def _row_pre(xr, wc, bias_c, anti, pre):
    """pre (L,) = bias + sum_j w[j] x[t -+ (K-1-j)]: the pre-activation of one (b, c) row."""
    L = xr.shape[0]
    K = wc.shape[0]
    for t in range(L):
        pre[t] = bias_c
    for j in range(K):
        shift = K - 1 - j
        if shift < L:
            p, xs = _tap_views(pre, xr, shift, anti)
            wj = wc[j]
            for i in range(L - shift):
                p[i] += wj * xs[i]


@njit(_FWD_SIG, parallel=True, **VECTOR_JIT)
def _conv_fwd(x, w, bias, half, out):
    """Channels [half, C) anti-causal (half = C: none)."""
    Bsz, C, L = x.shape
    for row in prange(Bsz * C):
        b = row // C
        c = row - b * C
        o = out[b, c]
        _row_pre(x[b, c], w[c], bias[c], c >= half, o)
        for t in range(L):
            v = o[t]
            o[t] = v * _sigmoid(v)


@njit(_BWD_SIG, parallel=True, **VECTOR_JIT)
def _conv_bwd(x, w, bias, half, dout, dx, dw_part, dbias_part):
    """dx (B, C, L); dw_part (B, C, K) and dbias_part (B, C): per row, summed over the batch by the caller."""
    Bsz, C, L = x.shape
    K = w.shape[1]
    for row in prange(Bsz * C):
        b = row // C
        c = row - b * C
        anti = c >= half
        xr, wc, go, dxr = x[b, c], w[c], dout[b, c], dx[b, c]
        g = np.empty(L, np.float32)
        _row_pre(xr, wc, bias[c], anti, g)
        acc = _F0
        for t in range(L):
            gv = _silu_grad(g[t], go[t])
            g[t] = gv
            acc += gv
            dxr[t] = _F0
        dbias_part[b, c] = acc
        for j in range(K):
            shift = K - 1 - j
            acc = _F0
            if shift < L:
                gs, xs = _tap_views(g, xr, shift, anti)
                _, dxs = _tap_views(g, dxr, shift, anti)
                wj = wc[j]
                for i in range(L - shift):
                    acc += gs[i] * xs[i]
                    dxs[i] += wj * gs[i]
            dw_part[b, c, j] = acc


# ---- token-major: x (B, L, Sx) and dout (B, L, Sd) rows whose first C entries are the channels
# (S > C: rows of a wider buffer); out, dx (B, L, C); wt (K, C); partials per (b, chunk) task

_BLS = types.float32[:, :, ::1]
_FWD_TM_SIG = types.void(_BLS, types.float32[:, ::1], types.float32[::1], types.int64, _BLS)
_BWD_TM_SIG = types.void(_BLS, types.float32[:, ::1], types.float32[::1], types.int64, _BLS, _BLS,
                         types.float32[:, :, ::1], types.float32[:, ::1])


@njit(inline="always", **VECTOR_JIT)
def _step_pre(xb, t, wt, bias, half, o):
    """o (C,) = pre-activation of step t: channels [0, half) read x[t - shift], [half, C) x[t + shift]."""
    L = xb.shape[0]
    K, C = wt.shape
    for c in range(C):
        o[c] = bias[c]
    oa = o[half:]
    for j in range(K):
        shift = K - 1 - j
        wj = wt[j]
        if t >= shift:
            xs = xb[t - shift]
            for c in range(half):
                o[c] += wj[c] * xs[c]
        if t + shift < L:
            xa, wa = xb[t + shift, half:C], wj[half:]
            for i in range(C - half):
                oa[i] += wa[i] * xa[i]


@njit(_FWD_TM_SIG, parallel=True, **VECTOR_JIT)
def _conv_fwd_tm(x, wt, bias, half, out):
    Bsz, L, C = out.shape
    n_chunks = (L + CHUNK - 1) // CHUNK
    for task in prange(Bsz * n_chunks):
        b = task // n_chunks
        t0 = (task - b * n_chunks) * CHUNK
        for t in range(t0, min(L, t0 + CHUNK)):
            o = out[b, t]
            _step_pre(x[b], t, wt, bias, half, o)
            for c in range(C):
                v = o[c]
                o[c] = v * _sigmoid(v)


@njit(_BWD_TM_SIG, parallel=True, **VECTOR_JIT)
def _conv_bwd_tm(x, wt, bias, half, dout, dx, dwt_part, dbias_part):
    """dwt_part (tasks, K, C) and dbias_part (tasks, C), summed by the caller.

    A task owns dx on its chunk [t0, t1), which needs the pre-activation gradient g on
    [t0 - (K-1), t1 + (K-1)): the K-1 steps either side are recomputed, not shared between tasks.
    """
    Bsz, L, C = dx.shape
    K = wt.shape[0]
    n_chunks = (L + CHUNK - 1) // CHUNK
    for task in prange(Bsz * n_chunks):
        b = task // n_chunks
        t0 = (task - b * n_chunks) * CHUNK
        t1 = min(L, t0 + CHUNK)
        g0, g1 = max(0, t0 - (K - 1)), min(L, t1 + K - 1)
        xb = x[b]
        g = np.empty((g1 - g0, C), np.float32)
        db, dw = dbias_part[task], dwt_part[task]
        for c in range(C):
            db[c] = _F0
        for j in range(K):
            for c in range(C):
                dw[j, c] = _F0
        for t in range(g0, g1):
            gt = g[t - g0]
            _step_pre(xb, t, wt, bias, half, gt)
            go = dout[b, t]
            for c in range(C):
                gt[c] = _silu_grad(gt[c], go[c])
            if t < t0 or t >= t1:
                continue  # halo: g only, the neighbouring task owns the step's dw and dbias
            for c in range(C):
                db[c] += gt[c]
            ga = gt[half:]
            for j in range(K):
                shift = K - 1 - j
                dwj = dw[j]
                if t >= shift:
                    xs = xb[t - shift]
                    for c in range(half):
                        dwj[c] += gt[c] * xs[c]
                if t + shift < L:
                    xa, dwa = xb[t + shift, half:C], dwj[half:]
                    for i in range(C - half):
                        dwa[i] += ga[i] * xa[i]
        for s in range(t0, t1):  # dx[s] = sum_j w[j] g[s + shift] (causal) or g[s - shift] (anti-causal)
            d = dx[b, s]
            for c in range(C):
                d[c] = _F0
            da = d[half:]
            for j in range(K):
                shift = K - 1 - j
                wj = wt[j]
                if s + shift < L:
                    gs = g[s + shift - g0]
                    for c in range(half):
                        d[c] += wj[c] * gs[c]
                if s >= shift:
                    ga, wa = g[s - shift - g0, half:], wj[half:]
                    for i in range(C - half):
                        da[i] += wa[i] * ga[i]


# ---- torch side

def _token_major(x: torch.Tensor) -> bool:
    """The result is laid out token-major (the transpose of a (B, L, C) buffer) when x has no unit
    stride along L (as :func:`helix.ops.custom_ops.token_major` declares for the custom op)."""
    return x.stride(-1) != 1 and x.shape[-1] > 1


def _token_rows(t: torch.Tensor) -> np.ndarray:
    """A C-contiguous (B, L, S) array, S >= C, whose [:, :, :C] is the (B, C, L) ``t`` transposed.

    The mixer's x (the first C channels of a (B, L, 2C) in_proj output) is read in place as (B, L, 2C)
    rows; other layouts are copied to (B, L, C)."""
    Bsz, C, L = t.shape
    row = t.stride(2)
    in_place = (t.stride(1) == 1 and row >= C and (Bsz == 1 or t.stride(0) == L * row)
                and t.storage_offset() + Bsz * L * row <= t.untyped_storage().nbytes() // t.element_size())
    if in_place:
        return t.as_strided((Bsz, L, row), (L * row, row, 1)).numpy()
    return t.transpose(1, 2).contiguous().numpy()


def _n_tasks_tm(Bsz: int, L: int) -> int:
    return Bsz * ((L + CHUNK - 1) // CHUNK)


def _bias(bias, C):
    return torch.zeros(C) if bias is None else f32(bias)


class _CausalConvCpuFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, bidirectional):
        ctx.save_for_backward(x, weight, bias)
        ctx.bidirectional = bidirectional
        return _forward(x, weight, bias, bidirectional).to(x.dtype)

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias = ctx.saved_tensors
        x32 = f32_view(x)
        Bsz, C, L = x32.shape
        K = weight.shape[1]
        half = C // 2 if ctx.bidirectional else C
        if _token_major(x32):
            dxt = torch.empty(Bsz, L, C)
            tasks = _n_tasks_tm(Bsz, L)
            dwt_part, dbias_part = torch.empty(tasks, K, C), torch.empty(tasks, C)
            with torch_threads():
                _conv_bwd_tm(_token_rows(x32), f32(weight.t()).numpy(), _bias(bias, C).numpy(), half,
                             _token_rows(f32_view(dout)), dxt.numpy(), dwt_part.numpy(), dbias_part.numpy())
            dx, dw = dxt.transpose(1, 2), dwt_part.sum(0).t()
        else:
            dx = torch.empty(Bsz, C, L)
            dw_part, dbias_part = torch.empty(Bsz, C, K), torch.empty(Bsz, C)
            with torch_threads():
                _conv_bwd(x32.contiguous().numpy(), f32(weight).numpy(), _bias(bias, C).numpy(), half,
                          f32(dout).numpy(), dx.numpy(), dw_part.numpy(), dbias_part.numpy())
            dw = dw_part.sum(0)
        dbias = None if bias is None else dbias_part.sum(0).to(bias.dtype)
        return dx.to(x.dtype), dw.to(weight.dtype), dbias, None


def _forward(x, weight, bias, bidirectional):
    """(B, C, L) fp32 in x's layout (token-major or contiguous)."""
    x32 = f32_view(x)
    Bsz, C, L = x32.shape
    half = C // 2 if bidirectional else C
    if _token_major(x32):
        outt = torch.empty(Bsz, L, C)
        with torch_threads():
            _conv_fwd_tm(_token_rows(x32), f32(weight.t()).numpy(), _bias(bias, C).numpy(), half, outt.numpy())
        return outt.transpose(1, 2)
    out = torch.empty(Bsz, C, L)
    with torch_threads():
        _conv_fwd(x32.contiguous().numpy(), f32(weight).numpy(), _bias(bias, C).numpy(), half, out.numpy())
    return out


def check_conv_args(x, weight, bias) -> None:
    """Shapes (ValueError) and device (RuntimeError) of the numba conv's arguments."""
    if x.dim() != 3 or weight.dim() != 2 or weight.shape[0] != x.shape[1]:
        raise ValueError(f"causal conv: x must be (B, C, L) and weight (C, K), got {tuple(x.shape)} "
                         f"and {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (x.shape[1],):
        raise ValueError(f"causal conv: bias must be (C,) = ({x.shape[1]},), got {tuple(bias.shape)}")
    if x.device.type != "cpu":
        raise RuntimeError(f"the numba causal conv runs on CPU tensors, got {x.device}")


def causal_conv1d_silu_cpu(x, weight, bias, bidirectional: bool = False):
    """x (B, C, L) CPU tensor -> (B, C, L) in x's dtype, computed in fp32; see the module docstring."""
    check_conv_args(x, weight, bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        return _CausalConvCpuFn.apply(x, weight, bias, bool(bidirectional))
    return _forward(x, weight, bias, bool(bidirectional)).to(x.dtype)


if torch.get_num_threads() != _TORCH_THREADS_AT_IMPORT:
    torch.set_num_threads(_TORCH_THREADS_AT_IMPORT)
