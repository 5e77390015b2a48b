"""The inner part of the fused BiMamba block as one autograd function that saves little.

Same function as :func:`helix.ops.bimamba.reference.bimamba_inner_reference` (tests/ops/bimamba
checks outputs and every gradient against it); what differs is memory. Autograd would keep x_in, z,
u, x_dbl, delta, y and the scan's chunk states H (at 300 s, B=8: ~4 GB per block). Here only h is
saved (0.12 GB); backward recomputes x_in and z (two matmuls), u (the conv), x_dbl and delta (two
small matmuls) and H (inside ``scan_backward``, in the same pass as the adjoint's chunk sums), then runs the
kernels' backward and the matmul gradients by hand, freeing each activation as soon as its last use
is done: the scan writes ddelta and dz over delta and z, and the forward's output y (for W_out's
gradient) over dy, which it has read. Triton kernels only: CUDA tensors, or CPU
tensors under ``TRITON_INTERPRET=1``.

``keep="all"`` (the block whose backward runs first: the model's last BiMamba block) saves z, u, x_dbl,
delta and the chunk states H instead, and its backward skips their recompute (two matmuls, the conv, two
small matmuls, the forward's chunk sums and carry): its backward starts while everything else is still
saved, and its own recompute would allocate the same buffers then, so the step's peak stays where it was.
``keep="states"`` saves H only (bf16 under ``LEAN_CONFIG``: 0.49 GB at 300 s, B=8), which spares the
backward the forward's chunk sums and one carry.

With ``lengths`` (B,) the conv and scan kernels stop at each clip's end (the backward half starts at
its last valid token), u and y are zero past it, and so is every gradient reaching h there.
"""

from __future__ import annotations

import torch

from helix.ops.bimamba.reference import bmm, bmm_tokens, split_bc
from helix.ops.causal_conv import triton as conv
from helix.ops.selective_scan import triton as scan


def _wgrad(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Gradient of w in w @ x[b] summed over the batch: sum_b g[b] x[b]^T, (M, K)."""
    return torch.bmm(g, x.transpose(1, 2)).sum(0)


def _bc(x_dbl, R, cfg):
    """B and C (B, 2, N, L), copied only when rows need padding for the kernels' alignment."""
    Bm, Cm = split_bc(x_dbl, R)
    return scan.aligned_rows(Bm, cfg), scan.aligned_rows(Cm, cfg)


class BiMambaInnerFn(torch.autograd.Function):
    """h (B, L, Dm) -> W_out y (B, Dm, L). Weights come composed (both directions stacked) and in the
    compute dtype, except conv_w/conv_b/A/D/dt_bias in fp32; ``R`` is the dt rank per direction."""

    @staticmethod
    def forward(ctx, h, w_x, w_z, conv_w, conv_b, w_xp, w_dt, A, D, dt_bias, w_out, R, cfg, lengths=None,
                scan_lengths=True, keep="none"):
        h_t = h.transpose(1, 2)
        z = bmm(w_z, h_t)
        u = conv.conv_forward(bmm(w_x, h_t), conv_w, conv_b, True, lengths)
        x_dbl = bmm(w_xp, u)
        delta = bmm(w_dt, x_dbl[:, :2 * R])
        Bm, Cm = _bc(x_dbl, R, cfg)
        y, H = scan.scan_forward(u, delta, A, Bm, Cm, D, z, dt_bias, True, True, False, cfg,
                                 lengths if scan_lengths else None, save_states=keep != "none")
        ctx.save_for_backward(h, w_x, w_z, conv_w, conv_b, w_xp, w_dt, A, D, dt_bias, w_out, lengths)
        # intermediates, none of them an input or output (so no reference cycle): held on ctx rather than
        # saved, so the backward can drop each after its last use, as it does with its own recompute
        ctx.kept = {"all": dict(z=z, u=u, x_dbl=x_dbl, delta=delta, H=H), "states": dict(H=H)}.get(keep)
        ctx.R, ctx.cfg, ctx.scan_lengths = R, cfg, scan_lengths
        # (B, Dm, L) as a view of the token-major product: the block adds its bias and residual along
        # tokens, so they read it contiguously (a (B, Dm, L) result made them strided kernels)
        return bmm_tokens(w_out, y).transpose(1, 2)

    @staticmethod
    def backward(ctx, dout):
        h, w_x, w_z, conv_w, conv_b, w_xp, w_dt, A, D, dt_bias, w_out, lengths = ctx.saved_tensors
        R, cfg = ctx.R, ctx.cfg
        dtype = h.dtype
        h_t = h.transpose(1, 2)
        # taken once: z and delta are written over below, so a second backward (retain_graph) remakes them
        kept, ctx.kept = getattr(ctx, "kept", None) or {}, None
        x_in = None
        if "z" in kept:
            z, u, x_dbl, delta, H = (kept[k] for k in ("z", "u", "x_dbl", "delta", "H"))
        else:  # z, u, x_dbl, delta as the forward made them; x_in stays for the conv backward (one product
            # less; the model's last block, whose backward holds the step's peak, keeps all and remakes it)
            z = bmm(w_z, h_t)
            x_in = bmm(w_x, h_t)
            u = conv.conv_forward(x_in, conv_w, conv_b, True, lengths)
            x_dbl = bmm(w_xp, u)
            delta = bmm(w_dt, x_dbl[:, :2 * R])
            H = kept.get("H")  # None: recomputed inside scan_backward
        kept = None
        Bm, Cm = _bc(x_dbl, R, cfg)
        dout = dout.to(dtype)
        dy = bmm(w_out.t(), dout)
        # ddelta and dz overwrite the recomputed delta and z; the forward's output y overwrites dy
        du, ddelta, dA, dB, dC, dD, dz, dbias = scan.scan_backward(
            dy, u, delta, A, Bm, Cm, D, z, dt_bias, H, True, True, False, cfg, overwrite=True,
            lengths=lengths if ctx.scan_lengths else None, y_out=dy)
        d_w_out = _wgrad(dout, dy)
        del dy, delta, z, Bm, Cm, H
        d_w_z = _wgrad(dz, h_t)
        dh = bmm_tokens(w_z.t(), dz)  # (B, L, Dm): the LayerNorm's backward reads it contiguously
        del dz
        d_w_dt = _wgrad(ddelta, x_dbl[:, :2 * R])
        d_xdbl = torch.cat([bmm(w_dt.t(), ddelta), dB.flatten(1, 2).to(dtype), dC.flatten(1, 2).to(dtype)], dim=1)
        del ddelta, dB, dC
        d_w_xp = _wgrad(d_xdbl, u)
        du.baddbmm_(w_xp.t().expand(du.shape[0], -1, -1), d_xdbl)  # += w_xp^T d_xdbl[b], no (B, D, L) temporary
        del d_xdbl, u
        if x_in is None:
            x_in = bmm(w_x, h_t)
        dx_in, d_conv_w, d_conv_b = conv.conv_backward(x_in, conv_w, conv_b, du, True, lengths)
        del du, x_in
        d_w_x = _wgrad(dx_in, h_t)
        dh.baddbmm_(dx_in.transpose(1, 2), w_x.expand(dx_in.shape[0], -1, -1))  # += dx_in[b]^T w_x
        return (dh, d_w_x, d_w_z, d_conv_w, d_conv_b, d_w_xp, d_w_dt, dA, dD, dbias, d_w_out, None, None, None,
                None, None)


def bimamba_inner_fused(h, w_x, w_z, conv_w, conv_b, w_xp, w_dt, A, D, dt_bias, w_out, R: int, lengths=None,
                        scan_lengths: bool = True, keep: str = "none"):
    """The lean Triton path; arguments and result as :func:`bimamba_inner_reference`, plus
    ``lengths`` (B,) valid tokens per clip (None: all), ``scan_lengths`` (False: lengths for the
    conv only, as :func:`bimamba_inner_reference` takes it) and ``keep``: ``"none"``, ``"states"`` (save the
    scan's chunk states) or ``"all"`` (save every activation the backward would recompute), see above."""
    if keep not in ("none", "states", "all"):
        raise ValueError(f"keep must be 'none', 'states' or 'all', not {keep!r}")
    if lengths is not None:
        lengths = lengths.to(device=h.device, dtype=torch.int64).contiguous()
    return BiMambaInnerFn.apply(h, w_x, w_z, conv_w, conv_b, w_xp, w_dt, A, D, dt_bias, w_out, R,
                                scan.LEAN_CONFIG, lengths, scan_lengths, keep)
