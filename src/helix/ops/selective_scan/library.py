"""The selective scan kernels as ``torch.library`` custom ops (why: :mod:`helix.ops.custom_ops`).

``helix::selective_scan_triton`` runs the Triton kernels (:mod:`.triton`): it returns the output and
the fp32 chunk-entry states H its backward needs. ``helix::selective_scan_cpu`` runs the numba
kernels (:mod:`.cpu`) and returns the output and the chunk-start states (a placeholder when nothing
needs a gradient). Each has a ``_backward`` op and an autograd formula that calls it.

The public entry points (:func:`selective_scan_triton_op`, :func:`selective_scan_cpu_op`) take the
dispatcher's arguments; dtype casts and B/C reshapes happen around the ops, in traced PyTorch, so
autograd casts the gradients back and the ops see one dtype per argument.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from helix.ops.backend import load_kernels
from helix.ops.custom_ops import (NAMESPACE, SavedCtx, bcl_strides, conform, contiguous_strides,
                                  empty_like_absent, fake, token_major)


def _kernels():
    return load_kernels("selective_scan.triton")


def _n_chunks(L, block: int):
    return (L + block - 1) // block


# ---- Triton: u, delta, z (B, D, L); A (D, N) fp32; Bm, Cm (B, G, N, L); D, bias (D,) fp32 or None

@torch.library.custom_op(f"{NAMESPACE}::selective_scan_triton", mutates_args=())
def _scan_triton(u: Tensor, delta: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor, D: Optional[Tensor],
                 z: Optional[Tensor], bias: Optional[Tensor], softplus: bool, bidirectional: bool,
                 lengths: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    k = _kernels()
    cfg = k.DEFAULT_CONFIG
    A, D, bias, lengths = _contiguous(A, D, bias, lengths)  # a compiler may hand over other layouts
    out, H = k.scan_forward(u, delta, A, k.aligned_rows(Bm, cfg), k.aligned_rows(Cm, cfg), D, z, bias, softplus,
                            bidirectional, False, cfg, lengths)
    return tuple(conform(t, *m) for t, m in zip((out, H), _scan_triton_meta(u, A)))


def _contiguous(*tensors):
    return tuple(t.contiguous() if t is not None else None for t in tensors)


def _scan_triton_meta(u, A):
    Bsz, Dch, L = u.shape
    cfg = _kernels().DEFAULT_CONFIG
    return [((Bsz, Dch, L), None, u.dtype),
            ((Bsz, Dch, _n_chunks(L, cfg.block_t) + 1, A.shape[1]), None, cfg.state_dtype(u.dtype))]


@_scan_triton.register_fake
def _scan_triton_fake(u, delta, A, Bm, Cm, D, z, bias, softplus, bidirectional, lengths):
    return tuple(fake(u, *m) for m in _scan_triton_meta(u, A))


@torch.library.custom_op(f"{NAMESPACE}::selective_scan_triton_backward", mutates_args=())
def _scan_triton_bwd(dout: Tensor, u: Tensor, delta: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor,
                     D: Optional[Tensor], z: Optional[Tensor], bias: Optional[Tensor], H: Tensor, softplus: bool,
                     bidirectional: bool, lengths: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor,
                                                                              Tensor, Tensor, Tensor, Tensor]:
    k = _kernels()
    cfg = k.DEFAULT_CONFIG
    A, D, bias, H, lengths = _contiguous(A, D, bias, H, lengths)
    grads = k.scan_backward(dout, u, delta, A, k.aligned_rows(Bm, cfg), k.aligned_rows(Cm, cfg), D, z, bias, H,
                            softplus, bidirectional, False, cfg, lengths=lengths)
    grads = tuple(empty_like_absent(u) if g is None else g for g in grads)
    return tuple(conform(t, *m) for t, m in zip(grads, _scan_triton_bwd_meta(u, delta, A, Bm, z)))


@_scan_triton_bwd.register_fake
def _scan_triton_bwd_fake(dout, u, delta, A, Bm, Cm, D, z, bias, H, softplus, bidirectional, lengths):
    return tuple(fake(u, *m) for m in _scan_triton_bwd_meta(u, delta, A, Bm, z))


def _scan_triton_bwd_meta(u, delta, A, Bm, z):
    Bsz, Dch, L = u.shape
    f32 = torch.float32
    lp = (L + 15) // 16 * 16  # dB, dC: views of rows padded to 16 elements (the kernels' alignment)
    bc_shape = tuple(Bm.shape)
    bc_strides = contiguous_strides((*bc_shape[:3], lp))
    meta = [((Bsz, Dch, L), None, u.dtype), ((Bsz, Dch, L), None, delta.dtype), (tuple(A.shape), None, f32),
            (bc_shape, bc_strides, f32), (bc_shape, bc_strides, f32), ((Dch,), None, f32),
            (((Bsz, Dch, L), None, z.dtype) if z is not None else ((0,), None, u.dtype)), ((Dch,), None, f32)]
    return meta


def _scan_triton_setup(ctx, inputs, output):
    u, delta, A, Bm, Cm, D, z, bias, softplus, bidirectional, lengths = inputs
    ctx.save_for_backward(u, delta, A, Bm, Cm, D, z, bias, output[1], lengths)
    ctx.flags = (softplus, bidirectional)


def _scan_triton_backward(ctx, dout, _dH):
    u, delta, A, Bm, Cm, D, z, bias, H, lengths = ctx.saved_tensors
    du, ddelta, dA, dB, dC, dD, dz, dbias = _scan_triton_bwd(dout, u, delta, A, Bm, Cm, D, z, bias, H,
                                                             *ctx.flags, lengths)
    return (du, ddelta, dA, dB, dC, dD if D is not None else None, dz if z is not None else None,
            dbias if bias is not None else None, None, None, None)


torch.library.register_autograd(f"{NAMESPACE}::selective_scan_triton", _scan_triton_backward,
                                setup_context=_scan_triton_setup)


def _f32(x):
    return x.float().contiguous() if x is not None else None


def selective_scan_triton_op(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                             bidirectional=False, lengths=None):
    """The Triton scan through its custom op; arguments as :func:`.triton.selective_scan_triton`
    (forward direction, default launch config)."""
    Bm, Cm, lengths = _kernels().scan_groups(u, B, C, bidirectional, lengths)  # (B, G, N, L)
    out, _ = _scan_triton(u, delta, _f32(A), Bm, Cm, _f32(D), z, _f32(delta_bias), bool(delta_softplus),
                          bool(bidirectional), lengths)
    return out


# ---- numba: the kernels' own autograd function (.cpu._ScanCpuFn) run with a stand-in ctx

@torch.library.custom_op(f"{NAMESPACE}::selective_scan_cpu", mutates_args=())
def _scan_cpu(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor], z: Optional[Tensor],
              bias: Optional[Tensor], softplus: bool, bidirectional: bool, save: bool) -> tuple[Tensor, Tensor]:
    from helix.ops.selective_scan import cpu

    if save:
        ctx = SavedCtx()
        out = cpu._ScanCpuFn.forward(ctx, u, delta, A, B, C, D, z, bias, softplus, bidirectional)
        starts = ctx.saved_tensors[-1]
    else:  # nothing needs a gradient: the kernel keeps no chunk states
        with torch.no_grad():
            out = cpu.selective_scan_cpu(u, delta, A, B, C, D, z, bias, softplus, bidirectional)
        starts = u.new_empty((1, 1, 1, 1), dtype=torch.float32)
    return tuple(conform(t, *m) for t, m in zip((out, starts), _scan_cpu_meta(u, A, save)))


def _scan_cpu_meta(u, A, save):
    from helix.ops.selective_scan.cpu import CHUNK

    Bsz, Dch, L = u.shape
    starts = (Bsz, Dch, _n_chunks(L, CHUNK), A.shape[1]) if save else (1, 1, 1, 1)
    return [(tuple(u.shape), bcl_strides(u, token_major(u)), u.dtype), (starts, None, torch.float32)]


@_scan_cpu.register_fake
def _scan_cpu_fake(u, delta, A, B, C, D, z, bias, softplus, bidirectional, save):
    return tuple(fake(u, *m) for m in _scan_cpu_meta(u, A, save))


@torch.library.custom_op(f"{NAMESPACE}::selective_scan_cpu_backward", mutates_args=())
def _scan_cpu_bwd(dout: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                  z: Optional[Tensor], bias: Optional[Tensor], starts: Tensor, softplus: bool,
                  bidirectional: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    from helix.ops.selective_scan import cpu

    ctx = SavedCtx((u, delta, A, B, C, D, z, bias, starts), flags=(softplus, bidirectional))
    grads = cpu._ScanCpuFn.backward(ctx, dout)[:8]
    grads = tuple(empty_like_absent(u) if g is None else g for g in grads)
    return tuple(conform(t, *m) for t, m in zip(grads, _scan_cpu_bwd_meta(u, delta, A, B, C, D, z, bias)))


@_scan_cpu_bwd.register_fake
def _scan_cpu_bwd_fake(dout, u, delta, A, B, C, D, z, bias, starts, softplus, bidirectional):
    return tuple(fake(u, *m) for m in _scan_cpu_bwd_meta(u, delta, A, B, C, D, z, bias))


def _scan_cpu_bwd_meta(u, delta, A, B, C, D, z, bias):
    def like(x, activation=False):  # a gradient in its input's dtype; activations keep the kernels' layout
        if x is None:
            return (0,), None, u.dtype
        return tuple(x.shape), (bcl_strides(x, token_major(x)) if activation else None), x.dtype

    return [like(u, True), like(delta, True), like(A), like(B), like(C), like(D), like(z, True), like(bias)]


def _scan_cpu_setup(ctx, inputs, output):
    u, delta, A, B, C, D, z, bias, softplus, bidirectional, save = inputs
    if not save:
        raise RuntimeError("helix::selective_scan_cpu was called with save=False but a gradient was asked for")
    ctx.save_for_backward(u, delta, A, B, C, D, z, bias, output[1])
    ctx.flags = (softplus, bidirectional)


def _scan_cpu_backward(ctx, dout, _dstarts):
    u, delta, A, B, C, D, z, bias, starts = ctx.saved_tensors
    grads = _scan_cpu_bwd(dout, u, delta, A, B, C, D, z, bias, starts, *ctx.flags)
    return (*(g if x is not None else None for g, x in zip(grads, (u, delta, A, B, C, D, z, bias))), None, None, None)


torch.library.register_autograd(f"{NAMESPACE}::selective_scan_cpu", _scan_cpu_backward, setup_context=_scan_cpu_setup)


def selective_scan_cpu_op(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          bidirectional=False):
    """The numba scan through its custom op; arguments and result as :func:`.cpu.selective_scan_cpu`."""
    from helix.ops.selective_scan import cpu

    cpu.check_scan_args(u, delta, A, B, C, D, z, delta_bias, bidirectional)
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    save = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in inputs)
    return _scan_cpu(*inputs, bool(delta_softplus), bool(bidirectional), save)[0]
