"""Depthwise causal conv1d + SiLU (the Mamba mixer's short convolution), fused, both directions.

    out[b, c, t] = silu(bias[c] + sum_j w[c, j] x[b, c, t - (K-1) + j])

Shapes: x (B, C, L) with unit stride along L (a channel slice of a larger tensor is fine);
weight (C, K); bias (C,). With ``bidirectional=True`` channels [C/2, C) are anti-causal: they see
x[t .. t+K-1] with the kernel reversed, i.e. exactly Flip(conv(Flip(x))) without the flips.

The Triton kernels read x once per tap from L1 and never materialise the padded input. Backward
is two launches: the first recomputes the pre-activation once per element and stores
dpre = dout * silu'(pre) in an fp32 (B, C, L) scratch, reducing dweight, dbias with one fp32 atomic
per (channel, tap) per program; the second gathers dx from the K shifted dpre values.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F


def causal_conv1d_silu_reference(x, weight, bias, bidirectional: bool = False):
    """PyTorch reference (and CPU path): x (B, C, L) -> (B, C, L)."""
    C, K = weight.shape
    L = x.shape[-1]
    if not bidirectional:
        return F.silu(F.conv1d(x, weight.unsqueeze(1), bias, padding=K - 1, groups=C)[..., :L])
    h = C // 2
    fwd = F.conv1d(x[:, :h], weight[:h].unsqueeze(1), bias[:h], padding=K - 1, groups=h)[..., :L]
    bwd = F.conv1d(x[:, h:].flip(-1), weight[h:].unsqueeze(1), bias[h:], padding=K - 1, groups=C - h)[..., :L]
    return F.silu(torch.cat([fwd, bwd.flip(-1)], dim=1))


def causal_conv1d_silu(x, weight, bias, bidirectional: bool = False, backend: str = "auto"):
    """Dispatch: the Triton kernels for CUDA tensors when Triton imports, else the reference."""
    if backend not in ("auto", "reference", "triton"):
        raise ValueError(f"backend must be 'auto', 'reference' or 'triton', got {backend!r}")
    use = backend == "triton" or (backend == "auto" and x.is_cuda)
    if use:
        kernels = _kernels(required=backend == "triton")
        if kernels is not None and (x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"):
            return kernels.CausalConvFn.apply(x, weight, bias, bool(bidirectional))
        if backend == "triton":
            raise RuntimeError("backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1)")
    return causal_conv1d_silu_reference(x, weight, bias, bidirectional)


def _kernels(required: bool):
    try:
        from helix.ops.selective_scan import _causal_conv_triton as kernels
    except ImportError as err:
        if required:
            raise RuntimeError(f"the Triton causal conv was requested but Triton cannot be imported ({err})") from err
        return None
    return kernels
