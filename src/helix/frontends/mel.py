"""Log-mel frontend, eq. (2): LayerNorm(Reshape(Conv2d_16x16(logmel))). (B, T) -> (B, L', D).

The spectrogram is computed inside the model, in batch on the model's device: one dataset feeds every
variant. Frames are padded up to a multiple of the patch size, so L' = (n_mels/16) * ceil(F/16)
(5 s at 16 kHz: F = 157 frames -> 8 * 10 = 80 tokens). Tokens are ordered time-major (all frequency
patches of the first 16 frames, then the next), so "the first K tokens" means the start of the clip.

A padded batch with ``lengths`` (B,) samples: samples past a clip's end are zeroed before the STFT
(as the STFT's own constant padding does for the clip alone), the standardisation uses the clip's
F_b = lengths[b] // hop + 1 valid frames only, frames past them are zero (the clip mean, as the
patch padding), and tokens past (n_mels/16) * ceil(F_b/16) are zeroed: each clip's tokens equal
those of the clip run alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from helix.frontends.checks import check_lengths, check_waveform
from helix.ops.layer_norm import apply_norm
from helix.ops.lengths import valid_mask


def hz_to_mel(f):
    """HTK mel scale."""
    return 2595.0 * math.log10(1.0 + f / 700.0) if isinstance(f, float) else 2595.0 * torch.log10(1.0 + f / 700.0)


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0,
                   f_max: float | None = None) -> torch.Tensor:
    """Triangular HTK-mel filters, (n_freqs, n_mels), each filter peaking at 1."""
    f_max = f_max if f_max is not None else sample_rate / 2
    freqs = torch.linspace(0, sample_rate / 2, n_freqs, dtype=torch.float64)
    m_pts = torch.linspace(hz_to_mel(float(f_min)), hz_to_mel(float(f_max)), n_mels + 2, dtype=torch.float64)
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
    lower, center, upper = f_pts[:-2], f_pts[1:-1], f_pts[2:]
    up = (freqs[:, None] - lower) / (center - lower)
    down = (upper - freqs[:, None]) / (upper - center)
    return torch.clamp(torch.minimum(up, down), min=0).float()


STFT_MODES = ("fft", "conv")


class LogMel(nn.Module):
    """(B, T) -> (B, n_mels, F) per-clip standardised log-mel power spectrogram.

    ``stft="fft"`` uses ``torch.stft``; ``"conv"`` computes the same transform as a strided
    convolution with the windowed DFT basis (a buffer, not a parameter), which tracing and ONNX
    export can follow: torch.stft(center=True, pad_mode="constant") is a zero pad of n_fft/2 on each
    side, then every hop-th frame dotted with window * cos and window * sin of each frequency bin.
    """

    def __init__(self, sample_rate: int = 16000, n_fft: int = 1024, hop: int = 512, n_mels: int = 128,
                 stft: str = "fft"):
        super().__init__()
        if stft not in STFT_MODES:
            raise ValueError(f"stft must be one of {STFT_MODES}, got {stft!r}")
        self.n_fft, self.hop, self.stft = n_fft, hop, stft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("fbank", mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate), persistent=False)
        if stft == "conv":
            n = torch.arange(n_fft, dtype=torch.float64)
            k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
            angle = 2 * math.pi * k * n / n_fft  # (n_freqs, n_fft)
            window = torch.hann_window(n_fft, dtype=torch.float64)
            basis = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window])  # (2 n_freqs, n_fft)
            self.register_buffer("dft_basis", basis.float().unsqueeze(1), persistent=False)

    def power(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, T) fp32 -> |STFT|^2 (B, n_freqs, F)."""
        if self.stft == "conv":
            x = F.pad(wave.unsqueeze(1), (self.n_fft // 2, self.n_fft // 2))  # (B, 1, T + n_fft)
            re, im = F.conv1d(x, self.dft_basis, stride=self.hop).chunk(2, dim=1)  # (B, n_freqs, F) each
            return re.square() + im.square()
        spec = torch.stft(wave, self.n_fft, self.hop, window=self.window, center=True,
                          pad_mode="constant", return_complex=True)
        return spec.real.square() + spec.imag.square()

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``lengths`` (B,) samples (checked by the caller) or None; frames past a clip's end are 0."""
        # the spectrogram is fp32 even under autocast: log of tiny bf16 powers is noise
        with torch.autocast(device_type=wave.device.type, enabled=False):
            wave = wave.float()
            if lengths is not None:
                wave = wave * valid_mask(lengths, wave.shape[1]).to(wave.dtype)
            power = self.power(wave)  # (B, n_freqs, F)
            mel = torch.matmul(self.fbank.t(), power)  # (B, n_mels, F)
            logmel = torch.log(mel + 1e-6)
            # per-clip standardisation: dataset-independent, so one checkpoint works on any audio
            if lengths is None:
                mean = logmel.mean(dim=(1, 2), keepdim=True)
                std = logmel.std(dim=(1, 2), keepdim=True)
                return (logmel - mean) / (std + 1e-5)
            frames = torch.div(lengths, self.hop, rounding_mode="floor") + 1  # (B,)
            keep = valid_mask(frames, logmel.shape[-1]).unsqueeze(1).to(logmel.dtype)  # (B, 1, F)
            count = (frames * logmel.shape[1]).to(logmel.dtype).view(-1, 1, 1)
            mean = (logmel * keep).sum(dim=(1, 2), keepdim=True) / count
            var = ((logmel - mean).square() * keep).sum(dim=(1, 2), keepdim=True) / (count - 1)
            return (logmel - mean) / (var.sqrt() + 1e-5) * keep


class MelFrontend(nn.Module):
    def __init__(self, d_model: int, sample_rate: int = 16000, n_fft: int = 1024, hop: int = 512,
                 n_mels: int = 128, patch: int = 16, stft: str = "fft"):
        super().__init__()
        if n_mels % patch:
            raise ValueError(f"n_mels ({n_mels}) must be a multiple of the patch size ({patch})")
        self.patch, self.n_mels, self.hop, self.n_fft = patch, n_mels, hop, n_fft
        self.logmel = LogMel(sample_rate, n_fft, hop, n_mels, stft)
        self.conv = nn.Conv2d(1, d_model, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(d_model)

    @property
    def min_samples(self) -> int:
        return self.n_fft // 2 + 1

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.hop + 1

    def num_tokens(self, num_samples: int) -> int:
        if num_samples < self.min_samples:
            return 0
        return (self.n_mels // self.patch) * math.ceil(self.num_frames(num_samples) / self.patch)

    def token_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """(B,) samples -> (B,) tokens, the tensor form of :meth:`num_tokens`."""
        return (self.n_mels // self.patch) * self.time_patches(lengths)

    def time_patches(self, lengths: torch.Tensor) -> torch.Tensor:
        """(B,) samples -> (B,) valid patch columns, ceil(frames / patch)."""
        frames = torch.div(lengths, self.hop, rounding_mode="floor") + 1
        return torch.div(frames + self.patch - 1, self.patch, rounding_mode="floor")

    def patch_grid(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) -> (B, D, n_mels/16, ceil(F/16)) patch embeddings before flattening."""
        # one argument when every clip is full: exports swap in a one-argument LogMel.forward
        m = self.logmel(wave) if lengths is None else self.logmel(wave, lengths)
        pad = (-m.shape[-1]) % self.patch
        m = nn.functional.pad(m, (0, pad))  # zero = the clip mean after standardisation
        return self.conv(m.unsqueeze(1).to(self.conv.weight.dtype))

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) [+ lengths (B,) samples] -> tokens (B, L', D), zero past each clip's tokens."""
        check_waveform(wave, self.min_samples, "mel frontend")
        lengths = check_lengths(lengths, wave, self.min_samples, "mel frontend")
        grid = self.patch_grid(wave, lengths)  # (B, D, Fm, Ft)
        tokens = apply_norm(self.norm, grid.permute(0, 3, 2, 1).flatten(1, 2))  # time-major: (B, Ft * Fm, D)
        if lengths is None:
            return tokens
        return tokens * valid_mask(self.token_lengths(lengths), tokens.shape[1]).unsqueeze(-1).to(tokens.dtype)
