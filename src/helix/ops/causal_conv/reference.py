"""Depthwise causal conv1d + SiLU: the specification (and CPU path).

    out[b, c, t] = silu(bias[c] + sum_j w[c, j] x[b, c, t - (K-1) + j])

Shapes: x (B, C, L); weight (C, K); bias (C,). With ``bidirectional=True`` channels [C/2, C) are
anti-causal: they see x[t .. t+K-1] with the kernel reversed, i.e. Flip(conv(Flip(x))).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_conv1d_silu_reference(x, weight, bias, bidirectional: bool = False):
    """PyTorch reference: x (B, C, L) -> (B, C, L)."""
    C, K = weight.shape
    L = x.shape[-1]
    if not bidirectional:
        return F.silu(F.conv1d(x, weight.unsqueeze(1), bias, padding=K - 1, groups=C)[..., :L])
    h = C // 2
    fwd = F.conv1d(x[:, :h], weight[:h].unsqueeze(1), bias[:h], padding=K - 1, groups=h)[..., :L]
    bwd = F.conv1d(x[:, h:].flip(-1), weight[h:].unsqueeze(1), bias[h:], padding=K - 1, groups=C - h)[..., :L]
    return F.silu(torch.cat([fwd, bwd.flip(-1)], dim=1))
