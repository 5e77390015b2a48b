"""The inner part of the fused BiMamba block as one autograd function that saves little.

Reference: the two-mixer path of :class:`helix.layers.bimamba.BiMambaBlock` (``scan_backend=
"reference"``); tests/ops/test_fused_block.py checks this function's outputs and every gradient
against it. The math is the same as the autograd-composed fused path; what differs is memory:

    x_in = W_x h     z = W_z h     u = silu(conv(x_in))     x_dbl = W_xp u
    delta = W_dt x_dbl[:2R]        y = scan(u, delta, A, B, C, D, z)     out = W_out y

Autograd would keep x_in, z, u, delta and the scan's chunk states H (at 300 s, B=8: ~3.4 GB per
block). Here only h, x_dbl and y are saved (~0.7 GB); backward recomputes x_in and z (two matmuls),
u (the conv), delta (one small matmul) and H (the chunk-state and carry passes, ~4 ms per block at
300 s, B=8), then runs the kernels' backward and the matmul gradients by hand, freeing each
activation as soon as its last use is done (the scan writes ddelta and dz over delta and z).
"""

from __future__ import annotations

import torch

from helix.layers.bimamba import _bmm
from helix.ops.selective_scan import _causal_conv_triton as conv
from helix.ops.selective_scan import triton as scan


def _wgrad(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Gradient of w in w @ x[b] summed over the batch: sum_b g[b] x[b]^T, (M, K)."""
    return torch.bmm(g, x.transpose(1, 2)).sum(0)


class FusedBiMambaInner(torch.autograd.Function):
    """h (B, L, Dm) -> W_out y (B, Dm, L). Weights come composed (both directions stacked) and in the
    compute dtype, except conv_w/conv_b/A/D/dt_bias in fp32; ``R`` is the dt rank per direction."""

    @staticmethod
    def _bc(x_dbl, R, cfg):
        """B and C (B, 2, N, L) views of x_dbl (copied only when rows need padding for alignment)."""
        N = (x_dbl.shape[1] - 2 * R) // 4
        Bm = scan._aligned_rows(x_dbl[:, 2 * R:2 * R + 2 * N].unflatten(1, (2, N)), cfg)
        Cm = scan._aligned_rows(x_dbl[:, 2 * R + 2 * N:].unflatten(1, (2, N)), cfg)
        return Bm, Cm

    @staticmethod
    def _recompute(h, w_x, w_z, conv_w, conv_b, w_dt, x_dbl, R, cfg):
        """z, u, delta, B, C as the forward made them (x_in is remade later, for the conv backward)."""
        h_t = h.transpose(1, 2)
        z = _bmm(w_z, h_t)
        u = conv.conv_forward(_bmm(w_x, h_t), conv_w, conv_b, True)
        delta = _bmm(w_dt, x_dbl[:, :2 * R])
        return (z, u, delta, *FusedBiMambaInner._bc(x_dbl, R, cfg))

    @staticmethod
    def forward(ctx, h, w_x, w_z, conv_w, conv_b, w_xp, w_dt, A, D, dt_bias, w_out, R, cfg):
        h_t = h.transpose(1, 2)
        z = _bmm(w_z, h_t)
        u = conv.conv_forward(_bmm(w_x, h_t), conv_w, conv_b, True)
        x_dbl = _bmm(w_xp, u)
        delta = _bmm(w_dt, x_dbl[:, :2 * R])
        Bm, Cm = FusedBiMambaInner._bc(x_dbl, R, cfg)
        y, _ = scan._forward(u, delta, A, Bm, Cm, D, z, dt_bias, True, True, False, cfg)
        ctx.save_for_backward(h, w_x, w_z, conv_w, conv_b, w_xp, w_dt, A, D, dt_bias, w_out, x_dbl, y)
        ctx.R, ctx.cfg = R, cfg
        return _bmm(w_out, y)

    @staticmethod
    def backward(ctx, dout):
        h, w_x, w_z, conv_w, conv_b, w_xp, w_dt, A, D, dt_bias, w_out, x_dbl, y = ctx.saved_tensors
        R, cfg = ctx.R, ctx.cfg
        dtype = h.dtype
        h_t = h.transpose(1, 2)
        z, u, delta, Bm, Cm = FusedBiMambaInner._recompute(h, w_x, w_z, conv_w, conv_b, w_dt, x_dbl, R, cfg)
        H = scan._chunk_entry_states(u, delta, A, Bm, dt_bias, True, True, False, cfg)
        dout = dout.to(dtype)
        d_w_out = _wgrad(dout, y)
        dy = _bmm(w_out.t(), dout)
        # ddelta and dz overwrite the recomputed delta and z
        du, ddelta, dA, dB, dC, dD, dz, dbias = scan._backward(
            dy, u, delta, A, Bm, Cm, D, z, dt_bias, H, True, True, False, cfg, overwrite=True)
        del dy, H, delta, z, Bm, Cm
        d_w_z = _wgrad(dz, h_t)
        dh_t = _bmm(w_z.t(), dz)
        del dz
        d_w_dt = _wgrad(ddelta, x_dbl[:, :2 * R])
        d_xdbl = torch.cat([_bmm(w_dt.t(), ddelta), dB.flatten(1, 2).to(dtype), dC.flatten(1, 2).to(dtype)], dim=1)
        del ddelta, dB, dC
        d_w_xp = _wgrad(d_xdbl, u)
        du += _bmm(w_xp.t(), d_xdbl)
        del d_xdbl, u
        dx_in, d_conv_w, d_conv_b = conv.conv_backward(_bmm(w_x, h_t), conv_w, conv_b, du, True)
        del du
        d_w_x = _wgrad(dx_in, h_t)
        dh = dh_t.add_(_bmm(w_x.t(), dx_in)).transpose(1, 2)
        return (dh, d_w_x, d_w_z, d_conv_w, d_conv_b, d_w_xp, d_w_dt, dA, dD, dbias, d_w_out, None, None)
