"""Frontends: waveform (B, T) at 16 kHz -> tokens (B, L, D)."""

from helix.frontends.mel import LogMel, MelFrontend, mel_filterbank
from helix.frontends.raw import RawFrontend

from helix.names import FRONTENDS


def build_frontend(kind: str, d_model: int, sample_rate: int = 16000, **mel_kwargs):
    if kind == "raw":
        return RawFrontend(d_model)
    if kind == "mel":
        return MelFrontend(d_model, sample_rate=sample_rate, **mel_kwargs)
    raise ValueError(f"frontend must be one of {FRONTENDS}, got {kind!r}")


__all__ = ["FRONTENDS", "LogMel", "MelFrontend", "RawFrontend", "build_frontend", "mel_filterbank"]
