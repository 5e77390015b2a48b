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


def host_to_device(array: np.ndarray, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A few host random numbers (numpy) as a tensor on ``device``, without waiting for the device.

    On CUDA they go through pinned memory (PyTorch's caching host allocator) with an asynchronous
    copy. A blocking copy, or one from pageable memory, makes PyTorch synchronize the stream: the
    host then waited every step for the previous step's kernels before it could prepare the next
    batch, and the GPU idled while it did (~20% of a captured 5 s step; RESULTS.md section 11).
    """
    t = torch.from_numpy(np.ascontiguousarray(array))
    if dtype is not None:
        t = t.to(dtype)
    if torch.device(device).type != "cuda":
        return t.to(device)
    staged = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    staged.copy_(t)
    return staged.to(device, non_blocking=True)


def augment_waveforms(wave: torch.Tensor, cfg: AugmentConfig, sample_rate: int,
                      host: np.random.Generator, dev: torch.Generator,
                      lengths: torch.Tensor | None = None) -> torch.Tensor:
    """wave (B, T) -> augmented (B, T), same dtype and device; the input is not modified.

    ``lengths`` (B,) (a padded batch): each clip is shifted around its own ``lengths[i]`` samples
    and its padding stays zero, so the clip is augmented as if it were alone. The random numbers
    drawn are the same either way.
    """
    B, T = wave.shape
    # copied once for the shift and the noise mask (pinned by the loader, so without waiting)
    lengths_dev = None if lengths is None else lengths.to(wave.device, non_blocking=True)
    max_shift = int(cfg.time_shift_s * sample_rate)
    if max_shift > 0:
        shifts = host_to_device(host.integers(-max_shift, max_shift + 1, size=B), wave.device)
        wave = roll_within(wave, shifts, lengths_dev)
    if cfg.gain_min != 1.0 or cfg.gain_max != 1.0:
        gains = host_to_device(host.uniform(cfg.gain_min, cfg.gain_max, size=(B, 1)), wave.device, wave.dtype)
        wave = wave * gains
    if cfg.noise_std > 0:
        noise = torch.randn(wave.shape, generator=dev, device=wave.device, dtype=wave.dtype)
        if lengths_dev is not None:  # (B, T) valid-sample mask: noise on the padding would be new signal
            noise = noise * (torch.arange(T, device=wave.device) < lengths_dev[:, None])
        wave = wave + cfg.noise_std * noise
    return wave


def roll_within(wave: torch.Tensor, shifts: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Circular shift of each clip by ``shifts[b]`` samples (``torch.roll`` per row), within its first
    ``lengths[b]`` samples when given (the padding after them stays where it is).

    On a GPU: one gather for the whole batch, with no host sync: a handful of launches whatever B
    (a roll per clip cost B launches, which a 1 s step cannot afford). The int64 index is transient
    (B*T*8 bytes, freed before the forward pass, so it never adds to the step's peak). On a CPU a
    roll per clip is ~8x cheaper than building that index (0.25 vs 2 ms at B=16, 1 s); both move
    the same samples, so the results are identical."""
    B, T = wave.shape
    if wave.device.type == "cpu":
        ends = [T] * B if lengths is None else lengths.tolist()
        return torch.stack([torch.roll(w, int(s)) if n >= T else torch.cat([torch.roll(w[:n], int(s)), w[n:]])
                            for w, s, n in zip(wave, shifts.tolist(), ends)])
    return roll_gather(wave, shifts, lengths)


def roll_gather(wave: torch.Tensor, shifts: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`roll_within` as one gather (any device; what a GPU runs)."""
    B, T = wave.shape
    t = torch.arange(T, device=wave.device)                    # (T,)
    n = torch.full((B, 1), T, device=wave.device, dtype=torch.int64) if lengths is None else lengths[:, None]
    src = torch.remainder(t - shifts[:, None], n)               # (B, T) source sample of each output sample
    if lengths is not None:
        src = torch.where(t < n, src, t)
    return torch.gather(wave, 1, src)
