"""The inner part of a BiMamba block with both directions stacked along channels.

``reference.py`` composes it from the scan and conv ops (the spec, any backend); ``fused.py`` is the
lean Triton autograd function that saves only its input h and recomputes the rest in backward, or keeps
the scan's chunk states or every activation where the model asks (``keep``; the shape of mamba-ssm's
``mamba_inner_fn`` / ``mamba_inner_ref``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from helix.ops.backend import resolve_backend, through_custom_op
from helix.ops.bimamba.reference import bimamba_inner_reference


def bimamba_inner(h, w_x, w_z, conv_w, conv_b, w_xp, w_dt, A, D, dt_bias, w_out, R: int,
                  backend: str = "auto", lean: bool = True, lengths=None, keep: str = "none"):
    """h (B, L, Dm) -> (B, Dm, L); see :func:`bimamba_inner_reference` for the maths and shapes.

    ``lean`` (Triton only): the memory-saving autograd function of :mod:`helix.ops.bimamba.fused`;
    ``keep`` (``"none"``, ``"states"``, ``"all"``) saves some or all of the activations its backward
    would otherwise recompute (:mod:`helix.ops.bimamba.fused`; not through the custom op, which recomputes).
    ``lengths`` (B,): per-clip valid tokens, or None (all full).
    """
    resolved = resolve_backend(backend, h)
    L = h.shape[1]
    padded = L
    if resolved == "triton" and lengths is None and not (lean and through_custom_op()):
        padded = aligned_tokens(L)
    scan_lengths = padded == L
    if not scan_lengths:
        # full clips on aligned rows: zero tokens past L, and the conv (only) told every clip ends at L,
        # so u is zero there; then x_dbl = W_xp u (so B and C) is zero too and the scan's state
        # increments delta B u are zero: the backward half's state is still exactly zero when it reaches
        # token L - 1, and the forward half's outputs past L are cut off (their gradients are zero). The
        # scan runs without lengths, whose masks cost its backward kernel 22% at 5 s (RESULTS.md section
        # 19), and every result at the first L tokens is that of the unpadded call.
        lengths = torch.full((h.shape[0],), L, dtype=torch.int64, device=h.device)
        h = F.pad(h, (0, 0, 0, padded - L))
    if resolved == "triton" and lean:
        if through_custom_op():  # compile/export see one opaque op (.library); never padded
            from helix.ops.bimamba.library import bimamba_inner_triton_op

            return bimamba_inner_triton_op(h, w_x, w_z, conv_w, conv_b, w_xp, w_dt, A, D, dt_bias, w_out, R,
                                           lengths=lengths)
        from helix.ops.bimamba.fused import bimamba_inner_fused

        out = bimamba_inner_fused(h, w_x, w_z, conv_w, conv_b, w_xp, w_dt, A, D, dt_bias, w_out, R,
                                  lengths=lengths, scan_lengths=scan_lengths, keep=keep)
    else:
        out = bimamba_inner_reference(h, w_x, w_z, conv_w, conv_b, w_xp, w_dt, A, D, dt_bias, w_out, R,
                                      backend=resolved, lengths=lengths, scan_lengths=scan_lengths)
    return out if scan_lengths else out[..., :L]


TOKEN_ALIGN = 16
"""The Triton path runs on token counts that are multiples of this (:func:`aligned_tokens`)."""


def aligned_tokens(L: int) -> int:
    """The token count the Triton path runs a batch of full length-L clips on: L rounded up to a
    multiple of :data:`TOKEN_ALIGN` (:func:`bimamba_inner`; batches with ``lengths`` run as they are).

    Why: a (B, C, L) bf16 row of L = 500 tokens is 1,000 bytes, so its 32-step chunks start off the
    32-byte sectors (each warp's 64-byte load of a chunk touches three sectors, not two), and cuBLAS
    takes its pre-Hopper kernels for products whose L is not a multiple of 8. On the H200 a 5 s, B=32
    Pure Mamba raw training step (L = 500) took 19.9 ms of kernels, against 16.7 ms at L = 512
    (benchmarks/RESULTS.md section 19)."""
    return -(-L // TOKEN_ALIGN) * TOKEN_ALIGN


__all__ = ["TOKEN_ALIGN", "aligned_tokens", "bimamba_inner", "bimamba_inner_reference"]
