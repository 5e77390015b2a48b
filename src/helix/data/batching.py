"""Batches of clips of different lengths: a padding collate and a length-bucketed batch sampler.

``PadCollate`` stacks ``(waveform (T_i,), label)`` items into ``(wave (B, T), labels (B,),
lengths (B,) int64)``, padding with zeros to the batch's longest clip, rounded up to the next of a
small fixed set of lengths (``buckets``) so shapes repeat and compiled kernels and cuDNN plans are
reused. Models take ``model(wave, lengths)``.

``BucketBatchSampler`` groups clips of similar length so little of each batch is padding:

- every clip belongs to the smallest bucket length that holds it (longer ones to the last bucket;
  the dataset crops them to its maximum);
- each epoch, each bucket is shuffled (seeded by ``seed`` and the epoch) and cut into *global*
  batches of ``batch_size * num_replicas`` clips; a bucket's remainder moves up to the next bucket
  (it pads to a longer length, never a shorter one), and the last remainder is dropped;
- the global batches are shuffled, and rank r takes the r-th ``batch_size`` slice of each: every
  rank steps through the same number of batches with the same padded shape at each step (DDP stays
  in lockstep), and the union over ranks of step i is the single-process global batch i;
- ``set_epoch(epoch, start_index)`` skips the first ``start_index`` clips this rank has already
  seen (a multiple of ``batch_size``), for exact mid-epoch resume.
"""

from __future__ import annotations

import bisect
import math
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


def bucket_lengths(lengths: Sequence[int], n_buckets: int, multiple: int = 1, max_length: int | None = None
                   ) -> list[int]:
    """``n_buckets`` padded lengths (ascending) at the quantiles of ``lengths`` (samples per clip),
    each rounded up to a multiple of ``multiple``; the last one holds the longest clip (or
    ``max_length``, where clips are cropped)."""
    if n_buckets < 1:
        raise ValueError(f"n_buckets must be at least 1, got {n_buckets}")
    if multiple < 1:
        raise ValueError(f"multiple must be at least 1, got {multiple}")
    x = np.asarray(lengths, dtype=np.int64)
    if x.size == 0 or x.min() < 1:
        raise ValueError("lengths must be a non-empty list of positive sample counts")
    if max_length is not None:
        x = np.minimum(x, max_length)
    qs = np.quantile(x, np.arange(1, n_buckets + 1) / n_buckets, method="inverted_cdf")
    edges = sorted({int(math.ceil(q / multiple) * multiple) for q in qs})
    return edges


class PadCollate:
    """``[(wave (T_i,), label), ...]`` -> ``(wave (B, T), labels (B,), lengths (B,) int64)``.

    T is the longest clip of the batch, rounded up to the smallest of ``buckets`` that holds it
    (None: the batch's longest clip exactly). Padding is zeros; models ignore it given ``lengths``.
    """

    def __init__(self, buckets: Sequence[int] | None = None):
        self.buckets = sorted(int(b) for b in buckets) if buckets else None

    def padded_length(self, longest: int) -> int:
        if not self.buckets:
            return longest
        i = bisect.bisect_left(self.buckets, longest)
        return self.buckets[i] if i < len(self.buckets) else longest

    def __call__(self, batch):
        if not batch:
            raise ValueError("cannot collate an empty batch")
        waves = [torch.as_tensor(w) for w, _ in batch]
        for w in waves:
            if w.dim() != 1 or w.numel() == 0:
                raise ValueError(f"each waveform must be a non-empty (T,) tensor, got shape {tuple(w.shape)}")
        lengths = torch.tensor([w.numel() for w in waves], dtype=torch.int64)
        out = waves[0].new_zeros(len(waves), self.padded_length(int(lengths.max())))
        for i, w in enumerate(waves):
            out[i, :w.numel()] = w
        labels = torch.as_tensor(np.asarray([y for _, y in batch]))
        return out, labels, lengths


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of indices of clips of similar length (module docstring); yields ``batch_size``
    indices per step on each of ``num_replicas`` ranks."""

    def __init__(self, lengths: Sequence[int], batch_size: int, buckets: Sequence[int], num_replicas: int = 1,
                 rank: int = 0, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas={num_replicas}), got {rank}")
        if not buckets:
            raise ValueError("buckets must list at least one padded length")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size, self.num_replicas, self.rank, self.seed = batch_size, num_replicas, rank, seed
        self.buckets = sorted(int(b) for b in buckets)
        which = np.searchsorted(np.asarray(self.buckets), self.lengths, side="left")
        self.members = [np.flatnonzero(np.minimum(which, len(self.buckets) - 1) == k)
                        for k in range(len(self.buckets))]
        self.epoch, self.start_index = 0, 0

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:
        """The epoch's shuffle; skip the first ``start_index`` clips this rank has consumed."""
        if start_index % self.batch_size:
            raise ValueError(f"start_index ({start_index}) must be a multiple of batch_size ({self.batch_size})")
        if start_index < 0 or start_index > self.batches_per_epoch() * self.batch_size:
            raise ValueError(f"start_index ({start_index}) must be in [0, {self.batches_per_epoch() * self.batch_size}]")
        self.epoch, self.start_index = epoch, start_index

    def global_batches(self) -> list[np.ndarray]:
        """This epoch's global batches (each ``batch_size * num_replicas`` indices), in step order."""
        rng = np.random.default_rng([self.seed, self.epoch])
        size = self.batch_size * self.num_replicas
        batches, carry = [], np.empty(0, dtype=np.int64)
        for members in self.members:
            pool = np.concatenate([carry, rng.permutation(members)])
            n = len(pool) // size * size
            batches.extend(pool[:n].reshape(-1, size))
            carry = pool[n:]  # remainder: padded to the next bucket up
        order = rng.permutation(len(batches))
        return [batches[i] for i in order]

    def batches_per_epoch(self) -> int:
        size = self.batch_size * self.num_replicas
        total, carry = 0, 0
        for members in self.members:
            pool = carry + len(members)
            total += pool // size
            carry = pool % size
        return total

    def __iter__(self) -> Iterator[list[int]]:
        lo = self.rank * self.batch_size
        for g in self.global_batches()[self.start_index // self.batch_size:]:
            yield g[lo:lo + self.batch_size].tolist()

    def __len__(self) -> int:
        return self.batches_per_epoch() - self.start_index // self.batch_size

    def padding_fraction(self) -> float:
        """Fraction of the computed samples that are padding over one epoch (all ranks), each batch
        padded to its bucket: what bucketing saves against one fixed length."""
        pad = PadCollate(self.buckets)
        valid = computed = 0
        for g in self.global_batches():
            for r in range(self.num_replicas):
                part = self.lengths[g[r * self.batch_size:(r + 1) * self.batch_size]]
                part = np.minimum(part, self.buckets[-1])
                valid += int(part.sum())
                computed += pad.padded_length(int(part.max())) * len(part)
        return 1.0 - valid / computed if computed else 0.0
