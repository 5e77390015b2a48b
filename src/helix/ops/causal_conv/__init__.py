"""Depthwise causal conv1d + SiLU (the Mamba mixer's short convolution), fused, both directions.

    out[b, c, t] = silu(bias[c] + sum_j w[c, j] x[b, c, t - (K-1) + j])

Shapes: x (B, C, L) with unit stride along L (a channel slice of a larger tensor is fine);
weight (C, K); bias (C,). With ``bidirectional=True`` channels [C/2, C) are anti-causal: they see
x[t .. t+K-1] with the kernel reversed, i.e. exactly Flip(conv(Flip(x))) without the flips.

With ``lengths`` (B,) neither half reads across a clip's end and outputs past it are zero; the
numba ``"cpu"`` kernel has no lengths support, so it gets inputs zeroed past each clip's end (what
the clip alone reads there) and its outputs are zeroed there.

``reference.py`` is the spec; ``triton.py`` holds the GPU kernels (see its docstring for their shape).
"""

from __future__ import annotations

from helix.ops.backend import load_kernels, resolve_backend, through_custom_op
from helix.ops.causal_conv.reference import causal_conv1d_silu_reference
from helix.ops.lengths import check_token_lengths, valid_mask

LENGTHS_BACKENDS = ("reference", "export", "triton", "cpu")  # natively, or masked ("cpu")


def causal_conv1d_silu(x, weight, bias, bidirectional: bool = False, backend: str = "auto", lengths=None):
    """Dispatch on :func:`helix.ops.backend.resolve_backend`; ``"export"`` uses the reference."""
    lengths = check_token_lengths(lengths, x.shape[0], x.shape[-1])
    resolved = resolve_backend(backend, x)
    if lengths is not None and resolved not in LENGTHS_BACKENDS:
        resolved = "reference"
    if resolved == "triton":
        if through_custom_op():  # compile/export see one opaque op (.library)
            from helix.ops.causal_conv.library import causal_conv_triton_op

            return causal_conv_triton_op(x, weight, bias, bool(bidirectional), lengths)
        return load_kernels("causal_conv.triton").CausalConvFn.apply(x, weight, bias, bool(bidirectional), lengths)
    if resolved == "cpu":
        if through_custom_op():
            from helix.ops.causal_conv.library import causal_conv_cpu_op as causal_conv1d_silu_cpu
        else:
            from helix.ops.causal_conv.cpu import causal_conv1d_silu_cpu

        if lengths is not None:
            mask = valid_mask(lengths, x.shape[-1])[:, None, :].to(x.dtype)  # (B, 1, L)
            return causal_conv1d_silu_cpu(x * mask, weight, bias, bidirectional) * mask
        return causal_conv1d_silu_cpu(x, weight, bias, bidirectional)
    return causal_conv1d_silu_reference(x, weight, bias, bidirectional, lengths)


__all__ = ["causal_conv1d_silu", "causal_conv1d_silu_reference"]
