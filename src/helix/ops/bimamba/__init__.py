"""The inner part of a BiMamba block with both directions stacked along channels.

``reference.py`` composes it from the scan and conv ops (the spec, any backend); ``fused.py`` is the
lean Triton autograd function that saves three activations and recomputes the rest in backward
(the shape of mamba-ssm's ``mamba_inner_fn`` / ``mamba_inner_ref``).
"""

from __future__ import annotations

from helix.ops.backend import resolve_backend, through_custom_op
from helix.ops.bimamba.reference import bimamba_inner_reference


def bimamba_inner(h, w_x, w_z, conv_w, conv_b, w_xp, w_dt, A, D, dt_bias, w_out, R: int,
                  backend: str = "auto", lean: bool = True, lengths=None):
    """h (B, L, Dm) -> (B, Dm, L); see :func:`bimamba_inner_reference` for the maths and shapes.

    ``lean`` (Triton only): the memory-saving autograd function of :mod:`helix.ops.bimamba.fused`.
    ``lengths`` (B,): per-clip valid tokens, or None (all full).
    """
    resolved = resolve_backend(backend, h)
    if resolved == "triton" and lean:
        if through_custom_op():  # compile/export see one opaque op (.library)
            from helix.ops.bimamba.library import bimamba_inner_triton_op as bimamba_inner_fused
        else:
            from helix.ops.bimamba.fused import bimamba_inner_fused

        return bimamba_inner_fused(h, w_x, w_z, conv_w, conv_b, w_xp, w_dt, A, D, dt_bias, w_out, R,
                                   lengths=lengths)
    return bimamba_inner_reference(h, w_x, w_z, conv_w, conv_b, w_xp, w_dt, A, D, dt_bias, w_out, R,
                                   backend=resolved, lengths=lengths)


__all__ = ["bimamba_inner", "bimamba_inner_reference"]
