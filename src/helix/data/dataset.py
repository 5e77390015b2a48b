"""Datasets over manifests and the DataLoader helper (tasks are built in :mod:`helix.data.tasks`).

Every dataset returns ``(waveform, label)``: a float32 tensor ``(T,)`` with
``T = round(clip_seconds * sample_rate)`` and an int class index, so one collate (stacking) gives
``(B, T)`` for any task. With ``native_length=True`` a clip keeps its own length instead (cropped
only when longer than ``clip_seconds``, never padded), :meth:`ClipDataset.sample_counts` says each
item's length without decoding, and :class:`~helix.data.batching.PadCollate` batches them with
their lengths. Frontends (mel etc.) belong to the model.

The hot path (:meth:`ClipDataset.__getitem__`) touches only flat numpy arrays built once in
``__init__`` (no per-item dicts or objects; also no Python objects whose reference counts would
un-share forked workers' memory), reads only the frames it needs -- or, with a decode-once cache
(:mod:`helix.data.cache`, ``data.cache``), slices them from memory -- and raises
:class:`~helix.data.audio.AudioError` naming the file rather than returning silence.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from helix.data.audio import fit_length, load_audio

__all__ = ["ClipDataset", "build_dataloader"]

class ClipDataset(Dataset):
    """One clip per manifest row: item ``i`` -> ``(waveform (T,), label)``.

    Files longer than the clip are cropped -- at a random offset when ``train`` (drawn from the
    torch RNG, which DataLoader seeds per worker), centred otherwise -- and shorter ones are
    zero-padded at the end, or, with ``native_length``, kept at their own length
    (``T = sample_counts()[i]``). Only the cropped part is decoded.
    """

    def __init__(
        self,
        rows: Sequence[dict[str, Any]],
        class_names: Sequence[str],
        clip_seconds: float,
        sample_rate: int = 16000,
        *,
        train: bool = False,
        resample: bool = True,
        native_length: bool = False,
    ):
        index = {name: i for i, name in enumerate(class_names)}
        unknown = {r["label"] for r in rows} - index.keys()
        if unknown:
            raise ValueError(f"labels {sorted(unknown)[:5]} are not among the {len(index)} class names")
        self.class_names = list(class_names)
        self.clip_seconds = float(clip_seconds)
        self.sample_rate = int(sample_rate)
        self.num_samples = int(round(clip_seconds * sample_rate))
        self.train = train
        self.resample = resample
        self.native_length = bool(native_length)
        # one bytes buffer, not a list of str: forked workers keep sharing it
        self.paths = np.array([os.fsencode(r["path"]) for r in rows], dtype=np.bytes_)
        self.labels = np.array([index[r["label"]] for r in rows], dtype=np.int64)
        self.frames = np.array([r["frames"] for r in rows], dtype=np.int64)
        self.rates = np.array([r["sample_rate"] for r in rows], dtype=np.int64)
        # soxr's one-shot output length is the rounded rate ratio (exact at equal rates)
        at_rate = np.rint(self.frames * (self.sample_rate / np.maximum(self.rates, 1))).astype(np.int64)
        self._counts = np.maximum(1, np.minimum(at_rate, self.num_samples))
        self._cache = None

    def __len__(self) -> int:
        return len(self.labels)

    def sample_counts(self) -> np.ndarray:
        """(N,) int64: the samples item ``i`` holds at ``sample_rate`` with ``native_length`` --
        the file's length after resampling, at most the clip's -- read from the manifest (the
        length-bucketed sampler groups clips by it)."""
        return self._counts

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        frames, native = int(self.frames[i]), int(self.rates[i])
        want = int(math.ceil(self.clip_seconds * native))
        start = 0
        if frames > want:
            spare = frames - want
            start = int(torch.randint(spare + 1, ())) if self.train else spare // 2
        # native length: a resampled file may come out a sample off the manifest's count; the
        # count wins so a batch's lengths are the ones its sampler planned for
        size = int(self._counts[i]) if self.native_length else self.num_samples
        # the cache holds the same samples the decoder gives (None: a file it could not decode,
        # read again here so it fails exactly as without a cache)
        x = self._cache.read(i, start, native, size) if self._cache is not None else None
        if x is None:
            x = load_audio(
                os.fsdecode(self.paths[i]), self.sample_rate, offset=start / native, duration=self.clip_seconds,
                resample=self.resample, expected_frames=frames,
            )
        return torch.from_numpy(fit_length(x, size)), int(self.labels[i])

    def use_cache(self, cache) -> None:
        """Read decoded files from ``cache`` (a :class:`helix.data.cache.CachedClips` built by
        :func:`helix.data.cache.cache_datasets`) instead of decoding them; None decodes again."""
        self._cache = cache


def build_dataloader(
    dataset: Dataset,
    batch_size: int = 32,
    *,
    shuffle: bool = False,
    num_workers: int = 2,
    pin_memory: bool | None = None,
    persistent_workers: bool | None = None,
    prefetch_factor: int = 4,
    drop_last: bool = False,
    seed: int = 0,
) -> DataLoader:
    """A DataLoader that keeps a GPU fed: worker processes, pinned memory, workers kept alive.

    ``pin_memory`` defaults to "a CUDA device is present". When ``torch.distributed`` is
    initialised, a :class:`DistributedSampler` gives each rank its share; call
    ``loader.sampler.set_epoch(epoch)`` each epoch so shuffling differs between epochs.
    ``seed`` fixes the shuffling order and the per-worker RNG seeds (random crops, Concat picks).
    """
    sampler = None
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
        shuffle = False
    generator = torch.Generator()
    generator.manual_seed(seed)
    workers = max(0, int(num_workers))
    extra = {}
    if workers:
        extra["prefetch_factor"] = prefetch_factor
        extra["persistent_workers"] = True if persistent_workers is None else persistent_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=workers,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        drop_last=drop_last,
        generator=generator,
        **extra,
    )
