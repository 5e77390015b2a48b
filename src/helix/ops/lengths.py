"""Per-sample lengths for batches of padded sequences: checks, masks and within-clip reversal.

A batch (B, ..., L) holds clip b in positions [0, lengths[b]); positions past a clip's end are
padding. ``lengths=None`` means every clip is full, and every op then takes its unmasked path.
"""

from __future__ import annotations

import torch


def check_token_lengths(lengths: torch.Tensor | None, batch: int, L: int, name: str = "lengths"):
    """``lengths`` as a (B,) int64 tensor, or None when absent; ValueError naming ``name`` otherwise.

    Ops take token lengths already checked by the model (see :func:`helix.frontends.checks.check_lengths`);
    this is the cheap shape/dtype guard at the op boundary (no device sync).
    """
    if lengths is None:
        return None
    if not isinstance(lengths, torch.Tensor) or lengths.dim() != 1 or lengths.shape[0] != batch:
        shape = tuple(lengths.shape) if isinstance(lengths, torch.Tensor) else type(lengths).__name__
        raise ValueError(f"{name} must be a (B,) = ({batch},) integer tensor of per-sample lengths, got {shape}")
    if lengths.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"{name} must be an integer tensor (int64), got dtype {lengths.dtype}")
    return lengths.long()


def valid_mask(lengths: torch.Tensor, L: int) -> torch.Tensor:
    """(B, L) bool: True at positions before each clip's end."""
    return torch.arange(L, device=lengths.device)[None, :] < lengths[:, None]


def reverse_index(lengths: torch.Tensor, L: int) -> torch.Tensor:
    """(B, L) time index that reverses each clip within its own length and leaves padding in place:
    index[b, t] = lengths[b] - 1 - t for t < lengths[b], else t. It is its own inverse."""
    t = torch.arange(L, device=lengths.device)[None, :]
    n = lengths[:, None]
    return torch.where(t < n, n - 1 - t, t)


def reverse_within(x: torch.Tensor, lengths: torch.Tensor | None, dim: int) -> torch.Tensor:
    """x with each clip's valid part reversed along ``dim`` (batch is dim 0); a plain flip when
    ``lengths`` is None (every clip full)."""
    if lengths is None:
        return x.flip(dim)
    dim = dim % x.dim()
    idx = reverse_index(lengths, x.shape[dim])  # (B, L)
    shape = [1] * x.dim()
    shape[0], shape[dim] = x.shape[0], x.shape[dim]
    return torch.gather(x, dim, idx.view(shape).expand(x.shape))
