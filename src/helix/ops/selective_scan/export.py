"""Export-friendly selective scan: the recurrence of :mod:`.reference` as code exporters can follow.

The reference runs its recurrence inside a custom ``autograd.Function`` with in-place updates on
chunk buffers. ``torch.jit.trace`` records that Function as an opaque Python call (the trace cannot
be saved) and in-place writes into views confuse graph capture, so exports use this plain form:

    x_t = exp(delta_t * A) * x_{t-1} + (delta_t * u_t) * B_t        state x: (B, D, N), fp32
    y_t = C_t . x_t + D * u_t,   then   y_t *= silu(z_t)

Two loop flavours share one step:

- ``"script"``: the time loop is a TorchScript function, so a trace keeps it as a real loop
  (``prim::Loop``; an ONNX ``Loop`` through the TorchScript-based ONNX exporter) whose trip count is
  the input length: one export serves every batch size and length.
- ``"unroll"``: a Python loop, for ``torch.export`` (the dynamo ONNX exporter), which unrolls it at
  the example's length; that export is valid only at that length.

Both keep the reference's memory profile (O(B*D*N) state, no (B, D, L, N) tensor) and its fp32
accumulation; they differ from it only by floating-point summation order.
"""

from __future__ import annotations

import warnings

import torch

from helix.ops.selective_scan.reference import scan_with_prologue

EXPORT_LOOPS = ("script", "unroll")


def _step(x, delta_t, u_t, A, B_t, C_t):
    """One step: x (B, D, N); delta_t, u_t (B, D); A (D, N); B_t, C_t (B, N) -> (x_t, y_t (B, D))."""
    x = torch.exp(delta_t.unsqueeze(-1) * A) * x + (delta_t * u_t).unsqueeze(-1) * B_t.unsqueeze(1)
    return x, torch.matmul(x, C_t.unsqueeze(-1)).squeeze(-1)


def _scan_loop(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
               C: torch.Tensor) -> torch.Tensor:
    """(B, D, L) inputs, B/C (B, N, L) -> y (B, D, L); compiled by TorchScript, which keeps the loop."""
    x = torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=u.dtype, device=u.device)
    ys: list[torch.Tensor] = []
    for t in range(u.shape[2]):
        # the step is written out here: a scripted function cannot call the Python helper
        d = delta[:, :, t]
        x = torch.exp(d.unsqueeze(-1) * A) * x + (d * u[:, :, t]).unsqueeze(-1) * B[:, :, t].unsqueeze(1)
        ys.append(torch.matmul(x, C[:, :, t].unsqueeze(-1)).squeeze(-1))
    return torch.stack(ys, dim=-1)


_scripted = None


def _scan_script(u, delta, A, B, C):
    """:func:`_scan_loop` through TorchScript, compiled on first use (not at import)."""
    global _scripted
    if _scripted is None:
        with warnings.catch_warnings():
            # torch 2.13 marks torch.jit deprecated; it still compiles, and tracing needs it
            warnings.filterwarnings("ignore", message=r".*torch\.jit.*", category=DeprecationWarning)
            _scripted = torch.jit.script(_scan_loop)
    return _scripted(u, delta, A, B, C)


def _scan_unrolled(u, delta, A, B, C):
    """Same as :func:`_scan_script` with a Python loop (unrolled by ``torch.export``)."""
    x = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[2]):
        x, y = _step(x, delta[:, :, t], u[:, :, t], A, B[:, :, t], C[:, :, t])
        ys.append(y)
    return torch.stack(ys, dim=-1)


def selective_scan_export(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          loop: str = "script", lengths=None) -> torch.Tensor:
    """Same arguments, shapes and result as :func:`selective_scan_reference`; ``loop`` picks the flavour.

    u, delta, z: (B, D, L); A: (D, N); B, C: (B, N, L); D, delta_bias: (D,) -> (B, D, L) in u's dtype.
    ``lengths`` (B,) masks as in the reference (zero delta and output past each clip's end).
    """
    if loop not in EXPORT_LOOPS:
        raise ValueError(f"loop must be one of {EXPORT_LOOPS}, got {loop!r}")
    scan = _scan_script if loop == "script" else _scan_unrolled
    return scan_with_prologue(scan, u, delta, A, B, C, D, z, delta_bias, delta_softplus, lengths,
                              trim=False)
