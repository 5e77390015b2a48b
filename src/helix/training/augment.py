"""Waveform augmentation applied in batch on the training device (paper section 3.4).

Random circular time shift (+-0.5 s), amplitude scaling in [0.8, 1.2] and additive Gaussian noise
(sigma 0.005), each drawn per example. Randomness comes from explicit generators seeded by
:func:`step_generators` from (seed, step, rank), so a resumed run replays exactly the same
augmentation without storing generator state, and evaluation is never touched.
"""

from __future__ import annotations

import numpy as np
import torch

from helix.training.config import AugmentConfig


def step_generators(seed: int, step: int, rank: int,
                    device: torch.device) -> tuple[np.random.Generator, torch.Generator]:
    """A host generator (shifts, gains, mixup) and a device generator (noise) for one micro-step."""
    host = np.random.default_rng([seed, step, rank])
    dev = torch.Generator(device=device)
    dev.manual_seed(int(host.integers(0, 2**62)))
    return host, dev


def augment_waveforms(wave: torch.Tensor, cfg: AugmentConfig, sample_rate: int,
                      host: np.random.Generator, dev: torch.Generator,
                      lengths: torch.Tensor | None = None) -> torch.Tensor:
    """wave (B, T) -> augmented (B, T), same dtype and device; the input is not modified.

    ``lengths`` (B,) (a padded batch): each clip is shifted around its own ``lengths[i]`` samples
    and its padding stays zero, so the clip is augmented as if it were alone. The random numbers
    drawn are the same either way.
    """
    B, T = wave.shape
    ends = [T] * B if lengths is None else [int(n) for n in lengths]
    max_shift = int(cfg.time_shift_s * sample_rate)
    if max_shift > 0:
        shifts = host.integers(-max_shift, max_shift + 1, size=B)
        # one roll per example: an index tensor for gather would cost B*T int64s (300 MB at 5 min, B=8)
        wave = torch.stack([torch.roll(w, int(s)) if n >= T else torch.cat([torch.roll(w[:n], int(s)), w[n:]])
                            for w, s, n in zip(wave, shifts, ends)])
    if cfg.gain_min != 1.0 or cfg.gain_max != 1.0:
        gains = torch.from_numpy(host.uniform(cfg.gain_min, cfg.gain_max, size=(B, 1)))
        wave = wave * gains.to(device=wave.device, dtype=wave.dtype)
    if cfg.noise_std > 0:
        noise = torch.randn(wave.shape, generator=dev, device=wave.device, dtype=wave.dtype)
        if lengths is not None:  # (B, T) valid-sample mask: noise on the padding would be new signal
            noise = noise * (torch.arange(T, device=wave.device) < lengths.to(wave.device)[:, None])
        wave = wave + cfg.noise_std * noise
    return wave
