"""Depthwise causal conv1d + SiLU: the specification (and CPU path).

    out[b, c, t] = silu(bias[c] + sum_j w[c, j] x[b, c, t - (K-1) + j])

Shapes: x (B, C, L); weight (C, K); bias (C,). With ``bidirectional=True`` channels [C/2, C) are
anti-causal: they see x[t .. t+K-1] with the kernel reversed, i.e. Flip(conv(Flip(x))).

With ``lengths`` (B,) neither half reads across a clip's end (inputs past it count as zero, as for
the clip alone) and outputs past the end are zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from helix.ops.lengths import check_token_lengths, valid_mask


def causal_conv1d_silu_reference(x, weight, bias, bidirectional: bool = False, lengths=None):
    """PyTorch reference: x (B, C, L) -> (B, C, L); ``lengths`` (B,) valid steps or None."""
    C, K = weight.shape
    L = x.shape[-1]
    lengths = check_token_lengths(lengths, x.shape[0], L)
    mask = None if lengths is None else valid_mask(lengths, L)[:, None, :].to(x.dtype)  # (B, 1, L)
    if mask is not None:
        x = x * mask
    if not bidirectional:
        out = F.silu(F.conv1d(x, weight.unsqueeze(1), bias, padding=K - 1, groups=C)[..., :L])
    else:
        h = C // 2
        fwd = F.conv1d(x[:, :h], weight[:h].unsqueeze(1), bias[:h], padding=K - 1, groups=h)[..., :L]
        bwd = F.conv1d(x[:, h:].flip(-1), weight[h:].unsqueeze(1), bias[h:], padding=K - 1, groups=C - h)[..., :L]
        out = F.silu(torch.cat([fwd, bwd.flip(-1)], dim=1))
    return out if mask is None else out * mask
