"""The causal conv + SiLU kernels as ``torch.library`` custom ops (why: :mod:`helix.ops.custom_ops`).

``helix::causal_conv_triton`` (:mod:`.triton`) takes x (B, C, L) with unit stride along L, weight
(C, K) and bias (C,) in fp32; ``helix::causal_conv_cpu`` (:mod:`.cpu`, numba) takes them as the
kernel does. Each has a ``_backward`` op and an autograd formula that calls it.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from helix.ops.backend import load_kernels
from helix.ops.custom_ops import NAMESPACE, SavedCtx, bcl_strides, conform, empty_like_absent, fake, token_major


def _kernels():
    return load_kernels("causal_conv.triton")


# ---- Triton

def _unit_stride(x, weight, bias, lengths):
    """What the kernels index as dense, made so (a no-op from our wrapper; a compiler may hand over
    other layouts)."""
    return (x if x.stride(-1) == 1 else x.contiguous(), weight.contiguous(), bias.contiguous(),
            lengths.contiguous() if lengths is not None else None)


@torch.library.custom_op(f"{NAMESPACE}::causal_conv_triton", mutates_args=())
def _conv_triton(x: Tensor, weight: Tensor, bias: Tensor, bidirectional: bool, lengths: Optional[Tensor]) -> Tensor:
    x, weight, bias, lengths = _unit_stride(x, weight, bias, lengths)
    out = _kernels().conv_forward(x, weight, bias, bidirectional, lengths)
    return conform(out, x.shape, dtype=x.dtype)


@_conv_triton.register_fake
def _conv_triton_fake(x, weight, bias, bidirectional, lengths):
    return fake(x, x.shape)


@torch.library.custom_op(f"{NAMESPACE}::causal_conv_triton_backward", mutates_args=())
def _conv_triton_bwd(dout: Tensor, x: Tensor, weight: Tensor, bias: Tensor, bidirectional: bool,
                     lengths: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    x, weight, bias, lengths = _unit_stride(x, weight, bias, lengths)
    dx, dw, db = _kernels().conv_backward(x, weight, bias, dout, bidirectional, lengths)
    return conform(dx, x.shape, dtype=x.dtype), conform(dw, weight.shape), conform(db, bias.shape)


@_conv_triton_bwd.register_fake
def _conv_triton_bwd_fake(dout, x, weight, bias, bidirectional, lengths):
    return fake(x, x.shape), fake(weight, weight.shape), fake(bias, bias.shape)


def _conv_triton_setup(ctx, inputs, output):
    x, weight, bias, bidirectional, lengths = inputs
    ctx.save_for_backward(x, weight, bias, lengths)
    ctx.bidirectional = bidirectional


def _conv_triton_backward(ctx, dout):
    x, weight, bias, lengths = ctx.saved_tensors
    dx, dw, db = _conv_triton_bwd(dout, x, weight, bias, ctx.bidirectional, lengths)
    return dx, dw, db, None, None


torch.library.register_autograd(f"{NAMESPACE}::causal_conv_triton", _conv_triton_backward,
                                setup_context=_conv_triton_setup)


def causal_conv_triton_op(x, weight, bias, bidirectional: bool = False, lengths=None):
    """The Triton conv through its custom op; arguments as :class:`.triton.CausalConvFn`. The fp32
    casts and x's unit stride along L are arranged here, in traced PyTorch, so autograd maps the
    gradients back."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    C, K = x.shape[1], weight.shape[-1]
    w = weight.reshape(C, K).float().contiguous()
    b = bias.float().contiguous() if bias is not None else x.new_zeros((C,), dtype=torch.float32)
    if lengths is not None:
        lengths = lengths.to(device=x.device, dtype=torch.int64).contiguous()
    return _conv_triton(x, w, b, bool(bidirectional), lengths)


# ---- numba: the kernel's own autograd function (.cpu._CausalConvCpuFn) run with a stand-in ctx

@torch.library.custom_op(f"{NAMESPACE}::causal_conv_cpu", mutates_args=())
def _conv_cpu(x: Tensor, weight: Tensor, bias: Optional[Tensor], bidirectional: bool) -> Tensor:
    from helix.ops.causal_conv import cpu

    out = cpu._CausalConvCpuFn.forward(SavedCtx(), x, weight, bias, bidirectional)
    return conform(out, x.shape, bcl_strides(x, token_major(x)), x.dtype)


@_conv_cpu.register_fake
def _conv_cpu_fake(x, weight, bias, bidirectional):
    return fake(x, x.shape, bcl_strides(x, token_major(x)))


@torch.library.custom_op(f"{NAMESPACE}::causal_conv_cpu_backward", mutates_args=())
def _conv_cpu_bwd(dout: Tensor, x: Tensor, weight: Tensor, bias: Optional[Tensor],
                  bidirectional: bool) -> tuple[Tensor, Tensor, Tensor]:
    from helix.ops.causal_conv import cpu

    ctx = SavedCtx((x, weight, bias), bidirectional=bidirectional)
    dx, dw, db = cpu._CausalConvCpuFn.backward(ctx, dout)[:3]
    real = (dx, dw, empty_like_absent(x) if db is None else db)
    return tuple(conform(t, *m) for t, m in zip(real, _conv_cpu_bwd_meta(x, weight, bias)))


def _conv_cpu_bwd_meta(x, weight, bias):
    return [(x.shape, bcl_strides(x, token_major(x)), x.dtype), (weight.shape, None, weight.dtype),
            ((0,), None, x.dtype) if bias is None else (bias.shape, None, bias.dtype)]


@_conv_cpu_bwd.register_fake
def _conv_cpu_bwd_fake(dout, x, weight, bias, bidirectional):
    return tuple(fake(x, *m) for m in _conv_cpu_bwd_meta(x, weight, bias))


def _conv_cpu_setup(ctx, inputs, output):
    x, weight, bias, bidirectional = inputs
    ctx.save_for_backward(x, weight, bias)
    ctx.bidirectional = bidirectional


def _conv_cpu_backward(ctx, dout):
    x, weight, bias = ctx.saved_tensors
    dx, dw, db = _conv_cpu_bwd(dout, x, weight, bias, ctx.bidirectional)
    return dx, dw, db if bias is not None else None, None


torch.library.register_autograd(f"{NAMESPACE}::causal_conv_cpu", _conv_cpu_backward, setup_context=_conv_cpu_setup)


def causal_conv_cpu_op(x, weight, bias, bidirectional: bool = False):
    """The numba conv through its custom op; arguments and result as :func:`.cpu.causal_conv1d_silu_cpu`."""
    from helix.ops.causal_conv import cpu

    cpu.check_conv_args(x, weight, bias)
    return _conv_cpu(x, weight, bias, bool(bidirectional))
