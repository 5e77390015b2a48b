"""Depthwise causal conv1d + SiLU (the Mamba mixer's short convolution), fused, both directions.

    out[b, c, t] = silu(bias[c] + sum_j w[c, j] x[b, c, t - (K-1) + j])

Shapes: x (B, C, L) with unit stride along L (a channel slice of a larger tensor is fine);
weight (C, K); bias (C,). With ``bidirectional=True`` channels [C/2, C) are anti-causal: they see
x[t .. t+K-1] with the kernel reversed, i.e. exactly Flip(conv(Flip(x))) without the flips.

``reference.py`` is the spec; ``triton.py`` holds the GPU kernels (see its docstring for their shape).
"""

from __future__ import annotations

from helix.ops.backend import load_kernels, resolve_backend
from helix.ops.causal_conv.reference import causal_conv1d_silu_reference


def causal_conv1d_silu(x, weight, bias, bidirectional: bool = False, backend: str = "auto"):
    """Dispatch on :func:`helix.ops.backend.resolve_backend`; ``"export"`` uses the reference."""
    resolved = resolve_backend(backend, x)
    if resolved == "triton":
        return load_kernels("causal_conv.triton").CausalConvFn.apply(x, weight, bias, bool(bidirectional))
    if resolved == "cpu":
        from helix.ops.causal_conv.cpu import causal_conv1d_silu_cpu

        return causal_conv1d_silu_cpu(x, weight, bias, bidirectional)
    return causal_conv1d_silu_reference(x, weight, bias, bidirectional)


__all__ = ["causal_conv1d_silu", "causal_conv1d_silu_reference"]
