"""Synthetic audio tasks generated in code: the offline demo and the tests need no download.

Two tasks, both at 16 kHz, with the same item format as the real datasets (``(waveform (T,)
float32 tensor, label int)``):

``synthetic_order`` -- keyword-like. A clip holds two sound events, A then B, drawn from a small
vocabulary (low tone, high tone, rising chirp, falling chirp, ...). The class is the *ordered* pair,
so "low then high" and "high then low" are different classes, just as "left" and "right" share
phonemes in a different order. A model that only detects which events occur (a bag of frames) is
capped at 50% accuracy; the rest needs temporal order.

``synthetic_concat_order`` -- its long-range version, like Concat Speech Commands: ``num_segments``
order clips back to back; the label is the class of the *first* segment, and the config pools over
the first segment's tokens only (``model.pool_first_k``).

Every item is a pure function of (dataset seed, split, index), so datasets are identical across
runs, processes and DataLoader workers, and cost nothing to store.
"""

from __future__ import annotations


import numpy as np
import torch
from torch.utils.data import Dataset

# name -> (kind, f_start Hz, f_end Hz); tones keep a constant pitch, chirps sweep
EVENT_TYPES = (
    ("low", 400.0, 400.0),
    ("high", 1600.0, 1600.0),
    ("rise", 500.0, 2400.0),
    ("fall", 2400.0, 500.0),
)
_SPLITS = {"train": 0, "val": 1, "test": 2}
SYNTHETIC_TASKS = ("synthetic_order", "synthetic_concat_order")


def order_class_names(num_events: int = 3) -> list[str]:
    """Ordered pairs of distinct events: ``num_events * (num_events - 1)`` classes."""
    if not 2 <= num_events <= len(EVENT_TYPES):
        raise ValueError(f"num_events must be in 2..{len(EVENT_TYPES)}, got {num_events}")
    names = [e[0] for e in EVENT_TYPES[:num_events]]
    return [f"{a}-then-{b}" for a in names for b in names if a != b]


def _event(kind: int, duration: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One event of ``duration`` seconds: a tone or linear chirp with a raised-cosine envelope."""
    _, f0, f1 = EVENT_TYPES[kind]
    jitter = rng.uniform(0.9, 1.1)  # pitch varies between speakers/instances, order does not
    n = int(duration * sample_rate)
    t = np.arange(n) / sample_rate
    freq = (f0 + (f1 - f0) * t / duration) * jitter
    phase = 2 * np.pi * np.cumsum(freq) / sample_rate + rng.uniform(0, 2 * np.pi)
    wave = np.sin(phase) + 0.3 * np.sin(2 * phase)  # a harmonic makes it less of a pure sine
    ramp = min(n // 2, int(0.01 * sample_rate))
    env = np.ones(n)
    env[:ramp] = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, ramp))
    env[n - ramp:] = env[:ramp][::-1]
    return (wave * env).astype(np.float32)


def order_clip(label: int, num_samples: int, sample_rate: int, num_events: int,
               rng: np.random.Generator) -> np.ndarray:
    """A (T,) clip whose class ``label`` is the ordered event pair (first, second)."""
    pairs = [(a, b) for a in range(num_events) for b in range(num_events) if a != b]
    first, second = pairs[label]
    clip_s = num_samples / sample_rate
    # event lengths and the gap scale with the clip so shorter segments still hold both events
    dur_a, dur_b = rng.uniform(0.12, 0.25, size=2) * clip_s
    gap = rng.uniform(0.0, 0.08) * clip_s
    slack = max(clip_s - (dur_a + gap + dur_b) - 0.04 * clip_s, 0.0)
    start_a = 0.02 * clip_s + rng.uniform(0, slack)
    start_b = start_a + dur_a + gap
    wave = rng.normal(0.0, rng.uniform(0.005, 0.03), size=num_samples).astype(np.float32)
    for kind, start, dur in ((first, start_a, dur_a), (second, start_b, dur_b)):
        event = _event(kind, dur, sample_rate, rng) * rng.uniform(0.3, 0.9)
        i = int(start * sample_rate)
        event = event[: max(num_samples - i, 0)]
        wave[i: i + len(event)] += event
    return wave


class SyntheticOrderDataset(Dataset):
    """``synthetic_order``: items ``(waveform (T,) float32, label)``, T = clip_seconds * sample_rate.

    Labels cycle through the classes (index % C), so every split is balanced. ``cache`` keeps
    generated clips in memory (4 bytes per sample), so only the first epoch pays for synthesis.
    """

    def __init__(self, size: int, split: str = "train", clip_seconds: float = 1.0,
                 sample_rate: int = 16000, num_events: int = 3, seed: int = 1234, cache: bool = True):
        if size < 1:
            raise ValueError(f"dataset size must be >= 1, got {size}")
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {list(_SPLITS)}, got {split!r}")
        self.class_names = order_class_names(num_events)
        self.size, self.split, self.seed = size, split, seed
        self.sample_rate, self.num_events = sample_rate, num_events
        self.num_samples = int(round(clip_seconds * sample_rate))
        self._cache: dict[int, torch.Tensor] | None = {} if cache else None

    def __len__(self) -> int:
        return self.size

    def _rng(self, index: int, *extra: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _SPLITS[self.split], index, *extra])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        wave = self._cache.get(index) if self._cache is not None else None
        if wave is None:
            wave = torch.from_numpy(self._make(index))
            if self._cache is not None:
                self._cache[index] = wave
        return wave, index % len(self.class_names)

    def _make(self, index: int) -> np.ndarray:
        label = index % len(self.class_names)
        return order_clip(label, self.num_samples, self.sample_rate, self.num_events, self._rng(index))


class SyntheticConcatOrderDataset(SyntheticOrderDataset):
    """``synthetic_concat_order``: ``num_segments`` order clips of ``clip_seconds / num_segments``
    each, back to back; the label is the first segment's class, the others are distractors."""

    def __init__(self, size: int, split: str = "train", clip_seconds: float = 4.0,
                 sample_rate: int = 16000, num_events: int = 3, seed: int = 1234, cache: bool = True,
                 num_segments: int = 4):
        super().__init__(size, split, clip_seconds, sample_rate, num_events, seed, cache)
        if num_segments < 1:
            raise ValueError(f"num_segments must be >= 1, got {num_segments}")
        self.num_segments = num_segments
        self.segment_samples = self.num_samples // num_segments

    def _make(self, index: int) -> np.ndarray:
        label = index % len(self.class_names)
        rng = self._rng(index)
        labels = [label] + list(rng.integers(0, len(self.class_names), size=self.num_segments - 1))
        wave = np.zeros(self.num_samples, dtype=np.float32)
        for s, lab in enumerate(labels):
            seg = order_clip(int(lab), self.segment_samples, self.sample_rate, self.num_events,
                             self._rng(index, s + 1))
            wave[s * self.segment_samples:(s + 1) * self.segment_samples] = seg
        return wave


def build_synthetic_datasets(name: str, root: str | None = None, clip_seconds: float = 1.0,
                             sample_rate: int = 16000, fold: int | None = None,
                             num_train: int = 1200, num_val: int = 300, num_test: int = 600,
                             num_events: int = 3, num_segments: int = 4, seed: int = 1234, cache: bool = True):
    """Same signature and return value as ``helix.data.tasks.build_task``:
    ``(train_ds, val_ds, test_ds, class_names)``. ``root`` and ``fold`` are ignored."""
    if name not in SYNTHETIC_TASKS:
        raise ValueError(f"unknown synthetic task {name!r}; choose from {SYNTHETIC_TASKS}")
    common = dict(clip_seconds=clip_seconds, sample_rate=sample_rate, num_events=num_events, seed=seed,
                  cache=cache)
    if name == "synthetic_concat_order":
        common["num_segments"] = num_segments
        cls = SyntheticConcatOrderDataset
    else:
        cls = SyntheticOrderDataset
    splits = [cls(n, split, **common) for split, n in
              (("train", num_train), ("val", num_val), ("test", num_test))]
    return (*splits, splits[0].class_names)
