"""Depthwise causal conv1d + SiLU on the CPU, compiled with numba: forward and backward.

    out[b, c, t] = silu(bias[c] + sum_j w[c, j] x[b, c, t - (K-1) + j])

Shapes: x (B, C, L); weight (C, K); bias (C,) or None. With ``bidirectional=True`` channels
[C//2, C) are anti-causal (x[t .. t+K-1], kernel reversed): Flip(conv(Flip(x))) without the flips.
:func:`helix.ops.causal_conv.reference.causal_conv1d_silu_reference` is the specification.

Channels-contiguous inputs (the mixer's transposed (B, L, C) activations) go to the ``_tm``
kernels: one batch item per parallel task, channels innermost. Otherwise each (b, c) row is one
parallel task. Taps are the outer loop and time the inner one, so every
inner loop is a shifted multiply-add over contiguous memory that LLVM vectorises; the K-1 edge
steps are excluded from a tap's range instead of being tested per element. Backward recomputes the
pre-activation in a per-row buffer; dweight and dbias go to per-row partials summed over the batch
in torch (no atomics).

The vectorisable exp is a copy of the one in :mod:`helix.ops.selective_scan.cpu` on purpose: numba's on-disk cache keys a
function on its own file, so a helper imported from another module could go stale in the cache.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange
from numba.core import types

from helix.ops.cpu_common import exp_fast, f32, f32_view, torch_threads

# loading the compiled parallel kernels can start numba's OpenMP pool, which may reset a shared
# OpenMP runtime's thread count (torch's): restored at the end of this module
_TORCH_THREADS_AT_IMPORT = torch.get_num_threads()
_F0, _F1, _HALF = np.float32(0.0), np.float32(1.0), np.float32(0.5)


@njit(fastmath=True, cache=True, inline="always")
def _sigmoid(v):
    """1 / (1 + e^-v) with the vectorisable exp of :mod:`helix.ops.cpu_common`."""
    return _F1 / (_F1 + exp_fast(-v))


@njit(fastmath=True, cache=True, inline="always")
def _pre_activation(xr, wc, bias_c, anti, pre):
    """pre[t] = bias + sum_j w[j] x[t + off_j]; off_j = j - (K-1) (causal) or (K-1) - j (anti-causal)."""
    L = xr.shape[0]
    K = wc.shape[0]
    pre[:] = bias_c
    for j in range(K):
        off = (K - 1) - j if anti else j - (K - 1)
        wj = wc[j]
        for t in range(max(0, -off), min(L, L - off)):
            pre[t] += wj * xr[t + off]


# one compiled signature per kernel: x, out, dout, dx as any-stride ('A') (B, C, L) views, read and
# written in place (a transposed (B, L, C) activation needs no copy, and no layout mix recompiles)
_BCL = types.Array(types.float32, 3, "A")
_FWD_SIG = types.void(_BCL, types.float32[:, ::1], types.float32[::1], types.boolean, _BCL)
_BWD_SIG = types.void(_BCL, types.float32[:, ::1], types.float32[::1], types.boolean, _BCL, _BCL,
                      types.float32[:, :, ::1], types.float32[:, ::1])


@njit(_FWD_SIG, parallel=True, fastmath=True, cache=True)
def _conv_fwd(x, w, bias, bidirectional, out):
    Bsz, C, L = x.shape
    for row in prange(Bsz * C):
        b = row // C
        c = row - b * C
        o = out[b, c]
        _pre_activation(x[b, c], w[c], bias[c], bidirectional and c >= C // 2, o)
        for t in range(L):
            o[t] = o[t] * _sigmoid(o[t])


@njit(_BWD_SIG, parallel=True, fastmath=True, cache=True)
def _conv_bwd(x, w, bias, bidirectional, dout, dx, dw_part, dbias_part):
    """dx (B, C, L); dw_part (B, C, K) and dbias_part (B, C): per row, summed over the batch by the caller."""
    Bsz, C, L = x.shape
    K = w.shape[1]
    for row in prange(Bsz * C):
        b = row // C
        c = row - b * C
        anti = bidirectional and c >= C // 2
        xr = x[b, c]
        wc = w[c]
        go = dout[b, c]
        dpre = np.empty(L, np.float32)
        _pre_activation(xr, wc, bias[c], anti, dpre)
        acc = _F0
        for t in range(L):
            s = _sigmoid(dpre[t])
            g = go[t] * s * (_F1 + dpre[t] * (_F1 - s))  # silu'(v) = s (1 + v (1 - s))
            dpre[t] = g
            acc += g
        dbias_part[b, c] = acc
        dxr = dx[b, c]
        dxr[:] = _F0
        for j in range(K):
            off = (K - 1) - j if anti else j - (K - 1)
            wj = wc[j]
            lo, hi = max(0, -off), min(L, L - off)
            acc = _F0
            for t in range(lo, hi):
                acc += dpre[t] * xr[t + off]
                dxr[t + off] += wj * dpre[t]
            dw_part[b, c, j] = acc


# The mixer hands the conv its (B, L, C) activation transposed: in that token-major layout a (b, c)
# row is strided by C, so the row kernels above read one float per cache line and do not vectorise
# (in the raw Pure Mamba step, L = 100 and C = 1024, they took 20% of the step). These variants take
# the (B, L, C) buffers themselves: one batch item per task, channels innermost (contiguous).
_BLC = types.float32[:, :, ::1]
_FWD_TM_SIG = types.void(_BLC, types.float32[:, ::1], types.float32[::1], types.int64, _BLC)
_BWD_TM_SIG = types.void(_BLC, types.float32[:, ::1], types.float32[::1], types.int64, _BLC, _BLC, _BLC,
                         types.float32[:, ::1])


@njit(fastmath=True, cache=True, inline="always")
def _pre_activation_tm(xb, wt, bias, half, pre):
    """pre (L, C) = bias + taps; wt (K, C); channels [half, C) anti-causal (half = C: none)."""
    L, C = pre.shape
    K = wt.shape[0]
    for t in range(L):
        pre[t, :] = bias
        for j in range(K):
            s = t + j - (K - 1)  # causal channels read x[t - (K-1) + j]
            if s >= 0:
                for c in range(half):
                    pre[t, c] += wt[j, c] * xb[s, c]
            s = t + (K - 1) - j  # anti-causal channels read x[t + (K-1) - j]
            if s < L:
                for c in range(half, C):
                    pre[t, c] += wt[j, c] * xb[s, c]


@njit(_FWD_TM_SIG, parallel=True, fastmath=True, cache=True)
def _conv_fwd_tm(xt, wt, bias, half, outt):
    """xt, outt (B, L, C) contiguous; wt (K, C)."""
    Bsz, L, C = xt.shape
    for b in prange(Bsz):
        o = outt[b]
        _pre_activation_tm(xt[b], wt, bias, half, o)
        for t in range(L):
            for c in range(C):
                o[t, c] = o[t, c] * _sigmoid(o[t, c])


@njit(_BWD_TM_SIG, parallel=True, fastmath=True, cache=True)
def _conv_bwd_tm(xt, wt, bias, half, doutt, dxt, dwt_part, dbias_part):
    """(B, L, C) contiguous x, dout, dx; dwt_part (B, K, C) and dbias_part (B, C) summed by the caller."""
    Bsz, L, C = xt.shape
    K = wt.shape[0]
    for b in prange(Bsz):
        xb, go, dxb = xt[b], doutt[b], dxt[b]
        g = np.empty((L, C), np.float32)
        _pre_activation_tm(xb, wt, bias, half, g)
        db = dbias_part[b]
        dw = dwt_part[b]
        db[:] = _F0
        dw[:, :] = _F0
        dxb[:, :] = _F0
        for t in range(L):
            for c in range(C):
                v = g[t, c]
                sg = _sigmoid(v)
                gv = go[t, c] * sg * (_F1 + v * (_F1 - sg))  # silu'(v) = s (1 + v (1 - s))
                g[t, c] = gv
                db[c] += gv
        for t in range(L):
            for j in range(K):
                s = t + j - (K - 1)
                if s >= 0:
                    for c in range(half):
                        dw[j, c] += g[t, c] * xb[s, c]
                        dxb[s, c] += wt[j, c] * g[t, c]
                s = t + (K - 1) - j
                if s < L:
                    for c in range(half, C):
                        dw[j, c] += g[t, c] * xb[s, c]
                        dxb[s, c] += wt[j, c] * g[t, c]


def _token_major(x: torch.Tensor) -> bool:
    """x (B, C, L) has contiguous channels: the transpose of a (B, L, C) view, e.g. the mixer's x half
    of its in_proj output (copied to a contiguous (B, L, C) for the kernels: a few ms, not tens)."""
    return x.shape[2] > 1 and x.stride(1) == 1 and x.stride(2) != 1


def _empty_like_bcl(x: torch.Tensor) -> torch.Tensor:
    """(B, C, L) fp32 laid out as x: token-major (a (B, L, C) buffer's transpose) when x is."""
    Bsz, C, L = x.shape
    return torch.empty(Bsz, L, C).transpose(1, 2) if x.stride(-1) != 1 and L > 1 else torch.empty(Bsz, C, L)


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
        dx = _empty_like_bcl(x32)
        if _token_major(x32):
            dwt_part, dbias_part = torch.empty(Bsz, weight.shape[1], C), torch.empty(Bsz, C)
            half = C // 2 if ctx.bidirectional else C
            with torch_threads():
                _conv_bwd_tm(x32.transpose(1, 2).contiguous().numpy(), f32(weight.t()).numpy(),
                             _bias(bias, C).numpy(), half, f32(dout.transpose(1, 2)).numpy(),
                             dx.transpose(1, 2).numpy(), dwt_part.numpy(), dbias_part.numpy())
            dbias = None if bias is None else dbias_part.sum(0).to(bias.dtype)
            return dx.to(x.dtype), dwt_part.sum(0).t().to(weight.dtype), dbias, None
        dw_part, dbias_part = torch.empty(Bsz, C, weight.shape[1]), torch.empty(Bsz, C)
        with torch_threads():
            _conv_bwd(x32.numpy(), f32(weight).numpy(), _bias(bias, C).numpy(), ctx.bidirectional,
                      f32_view(dout).numpy(), dx.numpy(), dw_part.numpy(), dbias_part.numpy())
        dbias = None if bias is None else dbias_part.sum(0).to(bias.dtype)
        return dx.to(x.dtype), dw_part.sum(0).to(weight.dtype), dbias, None


def _forward(x, weight, bias, bidirectional):
    x32 = f32_view(x)
    out = _empty_like_bcl(x32)
    if _token_major(x32):
        C = x.shape[1]
        with torch_threads():
            _conv_fwd_tm(x32.transpose(1, 2).contiguous().numpy(), f32(weight.t()).numpy(), _bias(bias, C).numpy(),
                         C // 2 if bidirectional else C, out.transpose(1, 2).numpy())
        return out
    with torch_threads():
        _conv_fwd(x32.numpy(), f32(weight).numpy(), _bias(bias, x.shape[1]).numpy(), bidirectional, out.numpy())
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
