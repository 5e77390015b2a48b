"""Selective scan (Mamba-1): the reference (spec and CPU path) and dispatch to the Triton kernels.

Backends and their resolution: :mod:`helix.ops.backend`.

Variable lengths: every entry point takes ``lengths`` (B,) (None = all full). The reference, the
export loop and the Triton kernels handle it natively. A kernel without lengths support (the numba
``"cpu"`` kernels) gets the same masked problem: delta with its bias and softplus applied and zeroed
past each clip's end (so the state passes the padding untouched, and a reversed scan reaches each
clip's last valid step with a zero state), and the output zeroed there. Other backends without
lengths support would fall back to the reference; lengths are never ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from helix.ops.backend import BACKENDS, load_kernels, resolve_backend, through_custom_op, triton_available
from helix.ops.lengths import check_token_lengths, valid_mask
from helix.ops.selective_scan.bidirectional import selective_scan_bidirectional_reference
from helix.ops.selective_scan.reference import selective_scan_reference


def _triton():
    return load_kernels("selective_scan.triton")


def _triton_scan():
    """The Triton scan: through its custom op while compile/export traces (:mod:`.library`)."""
    if through_custom_op():
        from helix.ops.selective_scan.library import selective_scan_triton_op

        return selective_scan_triton_op
    return _triton().selective_scan_triton


def _cpu_scan():
    """The numba scan: through its custom op while compile/export traces (:mod:`.library`)."""
    if through_custom_op():
        from helix.ops.selective_scan.library import selective_scan_cpu_op

        return selective_scan_cpu_op
    from helix.ops.selective_scan.cpu import selective_scan_cpu

    return selective_scan_cpu


# backends whose kernels take per-sample lengths; "cpu" gets masked inputs (module docstring), any
# other falls back to the reference when given some
LENGTHS_BACKENDS = ("reference", "export", "triton")
MASKED_BACKENDS = ("cpu",)


def lengths_backend(resolved: str, lengths) -> str:
    """``resolved``, or "reference" when ``lengths`` are given and ``resolved`` can take them neither
    natively nor masked."""
    ok = lengths is None or resolved in LENGTHS_BACKENDS or resolved in MASKED_BACKENDS
    return resolved if ok else "reference"


def _masked_call(kernel, u, delta, A, B, C, D, z, delta_bias, delta_softplus, lengths, **kw):
    """``kernel`` (no lengths support) on the masked problem: delta = softplus(delta + bias) (fp32),
    zero past each clip's end; outputs zeroed there. Exact: a zero step leaves the state untouched."""
    mask = valid_mask(lengths, u.shape[-1])[:, None, :]  # (B, 1, L)
    d = delta.to(torch.promote_types(delta.dtype, torch.float32))
    if delta_bias is not None:
        d = d + delta_bias.to(d.dtype)[None, :, None]
    if delta_softplus:
        d = F.softplus(d)
    y = kernel(u, (d * mask).to(delta.dtype), A, B, C, D, z, None, False, **kw)
    return y * mask.to(y.dtype)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, backend="auto",
                   lengths=None):
    """Dispatch the selective scan; same arguments and shapes as :func:`selective_scan_reference`.

    backend: "auto" (Triton for CUDA tensors when Triton imports, numba for CPU tensors when numba
    imports, else the reference), "reference", "triton" (raises RuntimeError when Triton is
    unavailable or the tensors are not on CUDA), "cpu" (the numba kernel, :mod:`.cpu`), or
    "export" (the same recurrence as a TorchScript loop that tracing and ONNX export can follow).
    lengths: (B,) valid steps per clip, or None; see :mod:`.reference`.
    """
    lengths = check_token_lengths(lengths, u.shape[0], u.shape[-1])
    resolved = lengths_backend(resolve_backend(backend, u), lengths)
    if resolved == "triton":
        return _triton_scan()(u, delta, A, B, C, D, z, delta_bias, delta_softplus, lengths=lengths)
    if resolved == "cpu":
        selective_scan_cpu = _cpu_scan()
        if lengths is not None:
            return _masked_call(selective_scan_cpu, u, delta, A, B, C, D, z, delta_bias, delta_softplus, lengths)
        return selective_scan_cpu(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    if resolved == "export":
        from helix.ops.selective_scan.export import selective_scan_export

        return selective_scan_export(u, delta, A, B, C, D, z, delta_bias, delta_softplus, lengths=lengths)
    return selective_scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus, lengths)


def selective_scan_bidirectional(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                                 delta_softplus=False, backend="auto", lengths=None):
    """Both scan directions in one call; see :mod:`helix.ops.selective_scan.bidirectional`.

    u, delta, z: (B, 2E, L), channels [0, E) scanned forwards and [E, 2E) backwards in time;
    A: (2E, N); B, C: (B, 2, N, L) (index 0 forwards, 1 backwards); D, delta_bias: (2E,).
    No flipped copies are made on the Triton path: the reversed half reads time backwards (from each
    clip's last valid step when ``lengths`` (B,) are given).
    """
    lengths = check_token_lengths(lengths, u.shape[0], u.shape[-1])
    resolved = lengths_backend(resolve_backend(backend, u), lengths)
    if resolved == "triton":
        return _triton_scan()(u, delta, A, B, C, D, z, delta_bias, delta_softplus, bidirectional=True,
                              lengths=lengths)
    if resolved == "cpu":
        selective_scan_cpu = _cpu_scan()
        if lengths is not None:  # the reversed half reads the (inert) padding first
            return _masked_call(selective_scan_cpu, u, delta, A, B, C, D, z, delta_bias, delta_softplus, lengths,
                                bidirectional=True)
        return selective_scan_cpu(u, delta, A, B, C, D, z, delta_bias, delta_softplus, bidirectional=True)
    return selective_scan_bidirectional_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus, lengths)


__all__ = ["BACKENDS", "LENGTHS_BACKENDS", "MASKED_BACKENDS", "lengths_backend", "selective_scan", "selective_scan_bidirectional",
           "selective_scan_bidirectional_reference", "selective_scan_reference", "triton_available"]
