"""The inner part of a fused BiMamba block, composed from the scan and conv ops: the reference.

Both directions are stacked along channels, channels first (B, C, L)::

    x_in = W_x h     z = W_z h     u = silu(conv(x_in))     x_dbl = W_xp u
    delta = W_dt x_dbl[:2R]        y = scan(u, delta, A, B, C, D, z)     out = W_out y

with the backward half of the conv anti-causal and the backward half of the scan reading time
backwards, so no flipped copies are made. Autograd composes the gradients (and keeps every
activation); :mod:`helix.ops.bimamba.fused` computes the same function with less memory and is
tested against this one. With ``backend="triton"`` this is also the fast path when memory is not
the constraint (``lean_blocks: false``).

With ``lengths`` (B,) the conv and the scan stop at each clip's end (the backward half starts at the
clip's last valid token); outputs past the end are W_out 0 = 0.

Shapes: h (B, L, Dm); w_x, w_z (2E, Dm); conv_w (2E, K), conv_b (2E,); w_xp (2R + 4N, 2E);
w_dt (2E, 2R); A (2E, N); D, dt_bias (2E,); w_out (Dm, 2E); result (B, Dm, L).
"""

from __future__ import annotations

import torch

from helix.ops.causal_conv import causal_conv1d_silu
from helix.ops.selective_scan import selective_scan_bidirectional


def bmm(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """w (M, K) times every x[b] (K, L) -> (B, M, L) contiguous; w is broadcast, never copied B times.

    A plain ``matmul`` would fold the batch into the rows and hand back a transposed (B, L, C)
    result, costing a strided copy of the full inner width per use and per gradient.
    """
    return torch.bmm(w.expand(x.shape[0], -1, -1), x)


def bmm_tokens(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The products of :func:`bmm` laid out token-major: (w x[b])^T for every b, (B, L, M) contiguous.

    For a result that goes on along tokens (the block's residual stream, the LayerNorm's gradient):
    the GEMM writes it in that layout, where a transposed (B, M, L) result would cost a strided copy.
    """
    return torch.bmm(x.transpose(1, 2), w.t().expand(x.shape[0], -1, -1))


def split_dbl(x_dbl: torch.Tensor, R: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dt (B, 2R, L), B and C (B, 2, N, L): views of x_dbl (B, 2R + 4N, L), whose rows are dt_f,
    dt_b, B_f, B_b, C_f, C_b. One ``split``, so autograd's backward is one ``cat`` (three slices
    would each zero-fill an x_dbl-sized gradient and copy into it, then add them up)."""
    N = (x_dbl.shape[1] - 2 * R) // 4
    dt, b, c = x_dbl.split([2 * R, 2 * N, 2 * N], dim=1)
    return dt, b.unflatten(1, (2, N)), c.unflatten(1, (2, N))


def split_bc(x_dbl: torch.Tensor, R: int) -> tuple[torch.Tensor, torch.Tensor]:
    """B and C (B, 2, N, L) views of x_dbl (:func:`split_dbl`)."""
    return split_dbl(x_dbl, R)[1:]


def bimamba_inner_reference(h, w_x, w_z, conv_w, conv_b, w_xp, w_dt, A, D, dt_bias, w_out, R: int,
                            backend: str = "reference", lengths=None, scan_lengths: bool = True):
    """h (B, L, Dm) -> W_out y (B, Dm, L), every step a differentiable op on ``backend``.

    ``scan_lengths=False``: ``lengths`` reach the conv only (the scan runs to L over the zeros the
    conv leaves past each end: the padded call of :func:`helix.ops.bimamba.bimamba_inner`)."""
    h_t = h.transpose(1, 2)  # (B, Dm, L) view: cuBLAS reads it as a transposed operand
    # x and z as two products rather than slices of one: a slice's backward would zero-fill a
    # (B, 4E, L) gradient per block
    x_in = bmm(w_x, h_t)  # (B, 2E, L): x_f, x_b
    z = bmm(w_z, h_t)  # (B, 2E, L): z_f, z_b
    u = causal_conv1d_silu(x_in, conv_w, conv_b, bidirectional=True, backend=backend, lengths=lengths)
    x_dbl = bmm(w_xp, u)  # (B, 2R + 4N, L)
    dt, Bm, Cm = split_dbl(x_dbl, R)
    delta = bmm(w_dt, dt)  # (B, 2E, L)
    y = selective_scan_bidirectional(u, delta, A, Bm, Cm, D, z=z, delta_bias=dt_bias, delta_softplus=True,
                                     backend=backend, lengths=lengths if scan_lengths else None)  # (B, 2E, L)
    return bmm(w_out, y)  # (B, Dm, L)
