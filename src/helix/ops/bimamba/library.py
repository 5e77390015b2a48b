"""The lean BiMamba inner function (:mod:`.fused`) as a ``torch.library`` custom op (why:
:mod:`helix.ops.custom_ops`).

``helix::bimamba_inner_triton`` returns W_out y; its backward keeps only the op's inputs (h and the
weights), and ``helix::bimamba_inner_triton_backward`` recomputes the rest, as
:class:`.fused.BiMambaInnerFn` does (its forward and backward run unchanged, with a stand-in ctx).
Triton kernels only.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from helix.ops.backend import load_kernels
from helix.ops.custom_ops import NAMESPACE, SavedCtx, conform, fake, transposed_strides

_WEIGHTS = ("w_x", "w_z", "conv_w", "conv_b", "w_xp", "w_dt", "A", "D", "dt_bias", "w_out")


def _fused():
    return load_kernels("bimamba.fused")


def _dense(*tensors):
    """The per-channel parameters the kernels index as dense arrays (a compiler may hand over other layouts)."""
    return tuple(t.contiguous() if t is not None else None for t in tensors)


def _config():
    return load_kernels("selective_scan.triton").LEAN_CONFIG


@torch.library.custom_op(f"{NAMESPACE}::bimamba_inner_triton", mutates_args=())
def _inner(h: Tensor, w_x: Tensor, w_z: Tensor, conv_w: Tensor, conv_b: Tensor, w_xp: Tensor, w_dt: Tensor,
           A: Tensor, D: Tensor, dt_bias: Tensor, w_out: Tensor, R: int,
           lengths: Optional[Tensor]) -> Tensor:
    ctx = SavedCtx()
    conv_w, conv_b, A, D, dt_bias, lengths = _dense(conv_w, conv_b, A, D, dt_bias, lengths)
    out = _fused().BiMambaInnerFn.forward(ctx, h, w_x, w_z, conv_w, conv_b, w_xp, w_dt, A, D, dt_bias, w_out, R,
                                          _config(), lengths)
    return conform(out, *_inner_meta(h, w_out))


def _inner_meta(h, w_out):
    # W_out y is the transpose of a token-major (B, L, Dm) product (.fused)
    shape = (h.shape[0], w_out.shape[0], h.shape[1])
    return shape, transposed_strides(shape), h.dtype


@_inner.register_fake
def _inner_fake(h, w_x, w_z, conv_w, conv_b, w_xp, w_dt, A, D, dt_bias, w_out, R, lengths):
    return fake(h, *_inner_meta(h, w_out))


@torch.library.custom_op(f"{NAMESPACE}::bimamba_inner_triton_backward", mutates_args=())
def _inner_bwd(dout: Tensor, h: Tensor, w_x: Tensor, w_z: Tensor, conv_w: Tensor, conv_b: Tensor, w_xp: Tensor,
               w_dt: Tensor, A: Tensor, D: Tensor, dt_bias: Tensor, w_out: Tensor, R: int,
               lengths: Optional[Tensor]) -> list[Tensor]:
    conv_w, conv_b, A, D, dt_bias, lengths = _dense(conv_w, conv_b, A, D, dt_bias, lengths)
    weights = (w_x, w_z, conv_w, conv_b, w_xp, w_dt, A, D, dt_bias, w_out)
    ctx = SavedCtx((h, *weights, lengths), R=R, cfg=_config(), scan_lengths=True)
    grads = _fused().BiMambaInnerFn.backward(ctx, dout)[:11]
    return [conform(g, *m) for g, m in zip(grads, _inner_bwd_meta(h, weights))]


def _inner_bwd_meta(h, weights):
    # dh is token-major like h; each weight's gradient is contiguous in its dtype
    return [(h.shape, None, h.dtype)] + [(w.shape, None, w.dtype) for w in weights]


@_inner_bwd.register_fake
def _inner_bwd_fake(dout, h, w_x, w_z, conv_w, conv_b, w_xp, w_dt, A, D, dt_bias, w_out, R, lengths):
    weights = (w_x, w_z, conv_w, conv_b, w_xp, w_dt, A, D, dt_bias, w_out)
    return [fake(h, *m) for m in _inner_bwd_meta(h, weights)]


def _inner_setup(ctx, inputs, output):
    *tensors, R, lengths = inputs
    ctx.save_for_backward(*tensors, lengths)
    ctx.R = R


def _inner_backward(ctx, dout):
    *tensors, lengths = ctx.saved_tensors
    grads = _inner_bwd(dout, *tensors, ctx.R, lengths)
    return (*grads, None, None)


torch.library.register_autograd(f"{NAMESPACE}::bimamba_inner_triton", _inner_backward, setup_context=_inner_setup)


def bimamba_inner_triton_op(h, w_x, w_z, conv_w, conv_b, w_xp, w_dt, A, D, dt_bias, w_out, R: int, lengths=None):
    """The lean Triton path through its custom op; arguments and result as :func:`.fused.bimamba_inner_fused`.
    conv_w, conv_b, A, D, dt_bias are cast to fp32 here (traced), as the kernels take them."""
    if lengths is not None:
        lengths = lengths.to(device=h.device, dtype=torch.int64).contiguous()
    f32 = [t.float() for t in (conv_w, conv_b, A, D, dt_bias)]
    return _inner(h, w_x, w_z, *f32[:2], w_xp, w_dt, *f32[2:], w_out, int(R), lengths)
