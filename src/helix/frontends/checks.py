"""Input validation shared by the frontends: clear errors instead of shape errors deep inside."""

from __future__ import annotations

import contextlib
import threading

import torch

_state = threading.local()


@contextlib.contextmanager
def lengths_checked_on_host():
    """Within this block, lengths already on the waveform's device are taken as checked: the caller
    ran :func:`check_lengths` on the host copy (valid, and not every clip full). A captured CUDA
    graph needs this: reading device lengths back for the check is a sync, which capture forbids."""
    before = getattr(_state, "trusted", False)
    _state.trusted = True
    try:
        yield
    finally:
        _state.trusted = before


def check_waveform(wave: torch.Tensor, min_samples: int, what: str) -> None:
    if not isinstance(wave, torch.Tensor):
        raise ValueError(f"waveform must be a torch.Tensor of shape (B, T), got {type(wave).__name__}")
    if wave.dim() != 2:
        raise ValueError(f"waveform must have shape (B, T) (batch, samples), got shape {tuple(wave.shape)}")
    if not wave.is_floating_point():
        raise ValueError(f"waveform must be floating point (float32 in [-1, 1]), got dtype {wave.dtype}")
    if wave.shape[1] < min_samples:
        raise ValueError(
            f"audio too short for the {what}: {wave.shape[1]} samples, need at least {min_samples} "
            f"for one token"
        )


def check_lengths(lengths, wave: torch.Tensor, min_samples: int, what: str) -> torch.Tensor | None:
    """Per-clip sample counts for a padded batch ``wave`` (B, T), checked.

    Returns None when ``lengths`` is None or every clip is full (the exact unmasked path), else
    ``lengths`` as int64 on the waveform's device. Pass CPU lengths: the check then needs no device
    sync (lengths on the GPU cost one per call). ValueError naming ``lengths`` when it is not a
    (B,) integer tensor or a value is not in [min_samples, T] (shorter than one token, zero,
    negative, or longer than the padded batch).
    """
    if lengths is None:
        return None
    if getattr(_state, "trusted", False) and isinstance(lengths, torch.Tensor) and lengths.device == wave.device:
        return lengths
    if (torch.compiler.is_compiling() or torch.jit.is_tracing()) and isinstance(lengths, torch.Tensor):
        # a traced graph cannot read values back (compile: a graph break with fullgraph=False, an
        # error with True; TorchScript/ONNX tracing: the values would become constants): the masked
        # path is taken as given, and with every clip full it equals the unmasked one
        return lengths.to(device=wave.device, dtype=torch.int64)
    B, T = wave.shape
    if not isinstance(lengths, torch.Tensor):
        raise ValueError(f"lengths must be a (B,) = ({B},) int64 tensor of samples per clip, "
                         f"got {type(lengths).__name__}")
    if lengths.dim() != 1 or lengths.shape[0] != B:
        raise ValueError(f"lengths must have shape (B,) = ({B},) (samples per clip), got {tuple(lengths.shape)}")
    if lengths.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise ValueError(f"lengths must be an integer tensor (int64 samples per clip), got dtype {lengths.dtype}")
    # checked where the lengths live: CPU lengths (what a collate returns) cost no device sync
    lo, hi = (int(v) for v in torch.aminmax(lengths))
    if hi > T:
        raise ValueError(f"lengths must be at most the padded length T={T}, got {hi}")
    if lo < min_samples:
        raise ValueError(f"lengths must be at least {min_samples} samples (one token of the {what}), got {lo}")
    if lo == T:
        return None
    return lengths.to(device=wave.device, dtype=torch.int64, non_blocking=True)
