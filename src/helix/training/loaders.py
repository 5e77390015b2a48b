"""Datasets and DataLoaders for a run: real corpora through ``helix.data.tasks.build_task``,
the synthetic tasks through ``helix.data.synthetic``; a held-out validation split when the dataset
has no official one; samplers that shard over ranks and resume mid-epoch.

``data.batching=bucket``: the datasets keep each clip's own length, the training loader draws
length-bucketed batches (:class:`~helix.data.batching.BucketBatchSampler`) padded by
:class:`~helix.data.batching.PadCollate` to the bucket's length, and every loader yields
``(wave (B, T), labels, lengths (B,))``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from helix.data.batching import BalancedBucketBatchSampler, BucketBatchSampler, PadCollate, bucket_lengths
from helix.data.cache import cache_datasets
from helix.data.tasks import TaskOptionError, build_task
from helix.training.config import DataConfig
from helix.core.distributed import DistEnv, ResumableDistributedSampler, ResumableWeightedSampler, ShardSampler

# the validation split does not depend on the training seed, so runs with different seeds are
# selected on the same held-out examples
VAL_SPLIT_SEED = 20260323
BUCKET_MULTIPLE = 160
"""Bucket lengths are whole multiples of this many samples (one raw-frontend token at 16 kHz)."""


@dataclass
class RunData:
    train: Dataset
    val: Dataset
    test: Dataset
    class_names: list[str]
    val_source: str
    """"official" or "held out <fraction> of train"."""
    clip_seconds: float | None = None
    """The clip length the datasets use (chosen by the task when ``data.clip_seconds`` is null)."""
    multilabel: bool = False
    """Items carry 0/1 label vectors (C,) instead of class indices: sigmoid outputs, BCE, mAP."""


def build_run_data(cfg: DataConfig, fold: int | None = None) -> RunData:
    """The three splits and class names for ``cfg`` (``fold`` overrides ``cfg.fold``)."""
    fold = cfg.fold if fold is None else fold
    kwargs = dict(clip_seconds=cfg.clip_seconds, sample_rate=cfg.sample_rate, fold=fold, **cfg.task_kwargs)
    if cfg.batching == "bucket":
        kwargs["native_length"] = True
    try:
        train, val, test, names = build_task(cfg.name, cfg.root, **kwargs)
    except TaskOptionError as err:
        where = f"data.task_kwargs.{err.key}" if err.key else "data.task_kwargs"
        raise ValueError(f"{where}: {err}") from None
    if cfg.cache != "none":
        # in this (the main) process, before any DataLoader worker forks: workers share its pages
        cache_datasets((train, val, test), cfg.cache, Path(cfg.root) / "helix" / "cache")
    source = "official"
    if val is None:
        train, val = split_validation(train, cfg.val_fraction)
        source = f"held out {cfg.val_fraction:.0%} of train"
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"dataset {cfg.name!r} has an empty split (train {len(train)}, test {len(test)})")
    clip = getattr(_base(train), "clip_seconds", None) or cfg.clip_seconds
    # the data decides: a multi-label task's datasets carry a (N, C) ``targets`` table
    return RunData(train, val, test, list(names), source, clip, multilabel=hasattr(_base(train), "targets"))


def sample_counts(dataset: Dataset) -> np.ndarray:
    """(N,) samples per item of a native-length dataset (or a Subset of one), from its manifest."""
    if isinstance(dataset, Subset):
        return sample_counts(dataset.dataset)[np.asarray(dataset.indices, dtype=np.int64)]
    counts = getattr(dataset, "sample_counts", None)
    if counts is None:
        raise ValueError(f"data.batching=bucket needs clips that know their length; {type(dataset).__name__} "
                         "does not (use data.batching=fixed)")
    return np.asarray(counts(), dtype=np.int64)


def _base(dataset: Dataset) -> Dataset:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def split_validation(train: Dataset, fraction: float) -> tuple[Dataset, Dataset]:
    """A seeded random hold-out of ``fraction`` of ``train`` -> (rest, held out)."""
    if fraction <= 0:
        raise ValueError("the dataset has no validation split and data.val_fraction is 0; "
                         "set data.val_fraction > 0 so model selection does not look at the test set")
    n = len(train)
    n_val = max(1, int(round(n * fraction)))
    if n_val >= n:
        raise ValueError(f"data.val_fraction={fraction} leaves no training data ({n} examples)")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(VAL_SPLIT_SEED)).tolist()
    return Subset(train, sorted(perm[n_val:])), Subset(train, sorted(perm[:n_val]))


def micro_batch_size(batch_size: int, world_size: int, accum: int) -> int:
    """Per-rank micro-batch for a global ``batch_size``; refuses splits that would change it."""
    if batch_size % (world_size * accum):
        raise ValueError(f"optim.batch_size={batch_size} is not divisible by world_size ({world_size}) x "
                         f"grad_accum_steps ({accum}); the global batch must split evenly")
    return batch_size // (world_size * accum)


def train_loader(ds: Dataset, micro_batch: int, env: DistEnv, seed: int, num_workers: int,
                 pin_memory: bool, sample_weights=None, num_buckets: int | None = None) -> DataLoader:
    """Shuffled, sharded over ranks, incomplete last batch dropped (every step has the full global
    batch, which keeps one-GPU and multi-GPU runs identical). Call :func:`start_epoch` before
    iterating each epoch. ``sample_weights`` (N,) draws the epoch with replacement in proportion to
    them instead (class-balanced sampling, ``data.balanced_sampling``), sharded and resumable alike.
    ``num_buckets`` (``data.batching=bucket``): batches of clips of similar length, padded to one of
    that many lengths, yielding ``(wave, labels, lengths)``; sharded and resumable alike, and with
    ``sample_weights`` too (the weighted draws grouped into buckets: ``BalancedBucketBatchSampler``)."""
    if len(ds) < micro_batch * env.world_size:
        raise ValueError(f"training set ({len(ds)} examples) is smaller than one global batch "
                         f"({micro_batch * env.world_size}); lower optim.batch_size")
    if num_buckets is not None:
        lengths = sample_counts(ds)
        buckets = bucket_lengths(lengths, num_buckets, BUCKET_MULTIPLE)
        if sample_weights is not None:
            batches = BalancedBucketBatchSampler(lengths, sample_weights, micro_batch, buckets, env.world_size,
                                                 env.rank, seed)
        else:
            batches = BucketBatchSampler(lengths, micro_batch, buckets, env.world_size, env.rank, seed)
        if batches.batches_per_epoch() < 1:
            raise ValueError(f"training set ({len(ds)} examples) is smaller than one global batch "
                             f"({micro_batch * env.world_size}); lower optim.batch_size")
        return DataLoader(ds, batch_sampler=batches, collate_fn=PadCollate(batches.buckets),
                          num_workers=num_workers, pin_memory=pin_memory, generator=torch.Generator())
    if sample_weights is not None:
        sampler = ResumableWeightedSampler(sample_weights, num_replicas=env.world_size, rank=env.rank, seed=seed)
    else:
        sampler = ResumableDistributedSampler(ds, num_replicas=env.world_size, rank=env.rank, seed=seed)
    # workers are not persistent: they restart each epoch with seeds drawn from a generator that
    # start_epoch reseeds, so random crops depend on (seed, epoch, rank) and survive a resume
    return DataLoader(ds, batch_size=micro_batch, sampler=sampler, drop_last=True,
                      num_workers=num_workers, pin_memory=pin_memory, generator=torch.Generator())


class TimedBatches:
    """An iterator over a loader's batches that adds up the time spent waiting for them.

    :meth:`take` returns the seconds spent in ``next()`` since the last call. The training loop logs
    that share of each epoch (``data_wait_frac``): a loop that spends a large share of its time
    waiting for the loader is bound by it (more ``data.num_workers``, ``data.cache``), one that
    spends a few percent is bound by the device."""

    def __init__(self, batches):
        self.batches, self.waited = batches, 0.0

    def __iter__(self):
        return self

    def __next__(self):
        start = time.perf_counter()
        try:
            return next(self.batches)
        finally:
            self.waited += time.perf_counter() - start

    def take(self) -> float:
        waited, self.waited = self.waited, 0.0
        return waited


def start_epoch(loader: DataLoader, seed: int, epoch: int, rank: int, start_index: int = 0) -> None:
    """Set the epoch's shuffle (and skip ``start_index`` samples when resuming mid-epoch) and the
    DataLoader workers' seeds."""
    sampler = loader.batch_sampler if isinstance(loader.batch_sampler, BucketBatchSampler) else loader.sampler
    sampler.set_epoch(epoch, start_index=start_index)
    loader.generator.manual_seed(hash((seed, epoch, rank)) & (2**63 - 1))


def eval_loader(ds: Dataset, batch_size: int, env: DistEnv, num_workers: int, pin_memory: bool,
                padded: bool = False) -> DataLoader:
    """Fixed order, each rank a disjoint shard, nothing dropped or repeated. ``padded``
    (native-length clips): batches padded to their longest clip, with lengths."""
    return DataLoader(ds, batch_size=batch_size, sampler=ShardSampler(len(ds), env.rank, env.world_size),
                      num_workers=num_workers, pin_memory=pin_memory, persistent_workers=num_workers > 0,
                      collate_fn=PadCollate() if padded else None)
