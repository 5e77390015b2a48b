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
  rank steps through the same number of batches (DDP stays in lockstep), and the union over ranks
  of step i is the single-process global batch i. Each rank pads its slice to the bucket of its own
  longest clip: at most the global batch's bucket, and shorter where a slice holds only clips
  carried up from a smaller bucket (the model is given the lengths, so this changes nothing);
- ``set_epoch(epoch, start_index)`` skips the first ``start_index`` clips this rank has already
  seen (a multiple of ``batch_size``), for exact mid-epoch resume.

``BalancedBucketBatchSampler`` is the same with class-balanced draws (``data.balanced_sampling``):
each epoch first draws ``N`` clips with replacement in proportion to per-clip weights (seeded by
``seed`` and the epoch), then groups *the drawn clips* into buckets, batches and ranks exactly as
above (:func:`bucketed_global_batches`, shared by both). Carrying remainders up makes an epoch
``N // (batch_size * num_replicas)`` batches whichever buckets the draws fall in: the length of a
plain bucketed epoch, and of a balanced epoch of fixed-length batches.
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


def bucket_index(lengths: np.ndarray, buckets: Sequence[int]) -> np.ndarray:
    """``(N,)`` int64: the smallest of ``buckets`` (ascending) that holds each clip; clips longer
    than the last bucket belong to it (the dataset crops them)."""
    which = np.searchsorted(np.asarray(buckets), lengths, side="left")
    return np.minimum(which, len(buckets) - 1)


def bucketed_global_batches(members: Sequence[np.ndarray], size: int, rng: np.random.Generator
                            ) -> list[np.ndarray]:
    """Group clips into global batches of ``size`` indices, in step order (the module docstring's
    rules). ``members[k]`` holds the dataset indices that fall in bucket k (ascending lengths;
    repeats allowed). Each bucket is shuffled and cut into batches, its remainder joins the next
    bucket up, the last remainder is dropped, and the batches are shuffled: ``sum(len) // size``
    batches whatever the split over buckets."""
    batches, carry = [], np.empty(0, dtype=np.int64)
    for idx in members:
        pool = np.concatenate([carry, rng.permutation(idx)])
        n = len(pool) // size * size
        batches.extend(pool[:n].reshape(-1, size))
        carry = pool[n:]  # remainder: padded to the next bucket up
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


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
        self.bucket_of = bucket_index(self.lengths, self.buckets)
        self.members = [np.flatnonzero(self.bucket_of == k) for k in range(len(self.buckets))]
        self.epoch, self.start_index = 0, 0

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:
        """The epoch's shuffle; skip the first ``start_index`` clips this rank has consumed."""
        if start_index % self.batch_size:
            raise ValueError(f"start_index ({start_index}) must be a multiple of batch_size ({self.batch_size})")
        if start_index < 0 or start_index > self.batches_per_epoch() * self.batch_size:
            raise ValueError(f"start_index ({start_index}) must be in [0, {self.batches_per_epoch() * self.batch_size}]")
        self.epoch, self.start_index = epoch, start_index

    def epoch_members(self, rng: np.random.Generator) -> list[np.ndarray]:
        """The clips this epoch batches, one array of dataset indices per bucket: every clip once."""
        return self.members

    def global_batches(self) -> list[np.ndarray]:
        """This epoch's global batches (each ``batch_size * num_replicas`` indices), in step order."""
        rng = np.random.default_rng([self.seed, self.epoch])
        return bucketed_global_batches(self.epoch_members(rng), self.batch_size * self.num_replicas, rng)

    def batches_per_epoch(self) -> int:
        # remainders carry up and only the last is dropped, so the buckets' sizes do not matter
        return len(self.lengths) // (self.batch_size * self.num_replicas)

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


class BalancedBucketBatchSampler(BucketBatchSampler):
    """:class:`BucketBatchSampler` over class-balanced draws (module docstring): each epoch draws
    ``N`` clips with replacement, clip i with probability ``weights[i] / sum(weights)``
    (:func:`helix.data.sampling.balanced_sample_weights`), from a generator seeded by (seed, epoch),
    the same on every rank; sharding, padding and ``set_epoch`` resume are the parent's."""

    def __init__(self, lengths: Sequence[int], weights: Sequence[float], batch_size: int, buckets: Sequence[int],
                 num_replicas: int = 1, rank: int = 0, seed: int = 0):
        super().__init__(lengths, batch_size, buckets, num_replicas, rank, seed)
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != self.lengths.shape or not np.isfinite(w).all() or (w < 0).any() or not w.sum() > 0:
            raise ValueError(f"sampling weights must be ({len(self.lengths)},) finite non-negative numbers, "
                             f"not all 0 (got shape {w.shape})")
        self.probabilities = w / w.sum()

    def epoch_members(self, rng: np.random.Generator) -> list[np.ndarray]:
        """This epoch's ``N`` weighted draws (repeats included), split by the bucket of each drawn clip."""
        drawn = rng.choice(len(self.probabilities), size=len(self.probabilities), p=self.probabilities)
        which = self.bucket_of[drawn]
        return [drawn[which == k] for k in range(len(self.buckets))]
