"""data.balanced_sampling with data.batching=bucket: class-balanced draws with replacement, grouped
into length buckets like the plain bucketed sampler, sharded over ranks and resumable mid-epoch, on
a real folder corpus of WAV files (45 "common" and 5 "rare" clips of 0.05 .. 0.35 s), and a tiny
training run that uses both."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from helix.cli import main
from helix.core.distributed import DistEnv, ResumableWeightedSampler
from helix.core.rundir import read_jsonl
from helix.data.batching import BalancedBucketBatchSampler, BucketBatchSampler, bucket_index, bucket_lengths
from helix.data.sampling import balanced_sample_weights, label_table
from helix.training.config_io import load_config
from helix.training.loaders import BUCKET_MULTIPLE, build_run_data, sample_counts, start_epoch, train_loader
from helix.training.loop import Trainer

_spec = importlib.util.spec_from_file_location("helix_test_corpora", Path(__file__).parent / "corpora.py")
corpora = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(corpora)

SETTINGS = ["data.name=folder", "data.clip_seconds=0.4", "data.batching=bucket", "data.num_buckets=3",
            "data.balanced_sampling=true", "data.num_workers=0", "model.name=helix_raw", "model.num_layers=1",
            "model.overrides={d_model: 16, d_state: 4}", "optim.epochs=2", "optim.batch_size=4",
            "device=cpu", "log_every_steps=1"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A 90/10 folder corpus of real WAV files whose lengths spread over the buckets."""
    root = tmp_path_factory.mktemp("balanced_buckets") / "mine"
    for name, n, freq in (("common", 45, 300.0), ("rare", 5, 1500.0)):
        for i in range(n):
            corpora.write_audio(root / name / f"{i}.wav", 0.05 + 0.3 * ((7 * i) % n) / n, 16000, freq=freq)
    assert main(["data", "prepare", "folder", "--root", str(root), "--no-progress"]) == 0
    return root


@pytest.fixture(scope="module")
def train_set(corpus):
    """(training dataset, labels (N,), lengths (N,), balanced weights (N,), buckets)."""
    data = build_run_data(load_config(None, SETTINGS + [f"data.root={corpus}"]).data)
    lengths = sample_counts(data.train)
    labels = label_table(data.train).argmax(axis=1)
    return (data.train, labels, lengths, balanced_sample_weights(data.train),
            bucket_lengths(lengths, 3, BUCKET_MULTIPLE))


def _epoch(sampler, epoch: int, start_index: int = 0) -> list[list[int]]:
    sampler.set_epoch(epoch, start_index)
    return list(sampler)


def test_draws_even_out_the_classes(train_set):
    _, labels, lengths, weights, buckets = train_set
    rare = labels == 1
    assert rare.mean() < 0.15  # the fixture is imbalanced
    balanced = BalancedBucketBatchSampler(lengths, weights, 4, buckets, seed=0)
    plain = BucketBatchSampler(lengths, 4, buckets, seed=0)
    drawn = np.concatenate([np.concatenate(_epoch(balanced, e)) for e in range(60)])
    unweighted = np.concatenate([np.concatenate(_epoch(plain, e)) for e in range(60)])
    # ~2400 draws: the rare share's std is 0.01, so 0.42 .. 0.58 holds; unweighted it stays near 0.1
    assert 0.42 < rare[drawn].mean() < 0.58
    assert rare[unweighted].mean() < 0.15
    assert len(set(drawn[rare[drawn]].tolist())) == rare.sum()  # every rare clip, repeated


def test_every_batch_is_one_bucket_padded_to_its_length(train_set):
    ds, labels, lengths, weights, buckets = train_set
    loader = train_loader(ds, 4, DistEnv(), 3, 0, False, sample_weights=weights, num_buckets=3)
    sampler = loader.batch_sampler
    assert isinstance(sampler, BalancedBucketBatchSampler)
    # the same boundaries as the plain bucketed loader: the quantiles of the training clips' lengths
    assert sampler.buckets == loader.collate_fn.buckets == list(buckets)
    assert train_loader(ds, 4, DistEnv(), 3, 0, False, num_buckets=3).collate_fn.buckets == list(buckets)
    which = bucket_index(lengths, buckets)
    start_epoch(loader, 3, 1, 0)
    indices = list(sampler)
    start_epoch(loader, 3, 1, 0)
    batches = list(loader)
    assert len(batches) == len(indices) == len(ds) // 4
    seen_buckets = set()
    for ids, (wave, y, n) in zip(indices, batches):
        k = int(which[ids].max())  # the batch's bucket: its longest clip's
        seen_buckets.add(k)
        # clips from smaller buckets are only a carried-up remainder, never a whole batch
        assert (which[ids] < k).sum() < 4
        assert wave.shape[1] == buckets[k]  # padded to that bucket's length, not to the longest clip
        assert n.tolist() == lengths[ids].tolist() and y.tolist() == labels[ids].tolist()
        for row, m in zip(wave, n):
            assert row[:m].abs().sum() > 0 and not row[m:].any()
    assert len(seen_buckets) > 1


def test_deterministic_per_seed_and_new_each_epoch(train_set):
    _, _, lengths, weights, buckets = train_set
    a = BalancedBucketBatchSampler(lengths, weights, 4, buckets, seed=5)
    b = BalancedBucketBatchSampler(lengths, weights, 4, buckets, seed=5)
    assert _epoch(a, 2) == _epoch(b, 2)
    assert _epoch(a, 3) != _epoch(a, 2)
    assert _epoch(BalancedBucketBatchSampler(lengths, weights, 4, buckets, seed=6), 2) != _epoch(a, 2)
    with pytest.raises(ValueError, match=r"sampling weights must be \(\d+,\) finite non-negative"):
        BalancedBucketBatchSampler(lengths, np.zeros(len(lengths)), 4, buckets)
    with pytest.raises(ValueError, match="sampling weights"):
        BalancedBucketBatchSampler(lengths, weights[:-1], 4, buckets)


def test_two_ranks_split_each_global_batch_and_match_the_epoch_length(train_set):
    ds, _, lengths, weights, _ = train_set
    one = train_loader(ds, 4, DistEnv(), 9, 0, False, sample_weights=weights, num_buckets=3)
    ranks = [train_loader(ds, 2, DistEnv(rank=r, world_size=2), 9, 0, False, sample_weights=weights,
                          num_buckets=3) for r in (0, 1)]
    for r, loader in enumerate(ranks):
        start_epoch(loader, 9, 4, r)
    start_epoch(one, 9, 4, 0)
    r0, r1, whole = (list(loader.batch_sampler) for loader in (*ranks, one))
    assert len(r0) == len(r1) == len(whole) == len(ds) // 4
    # the epoch length of balanced sampling with fixed-length batches (same draws count, drop_last)
    for world in (1, 2):
        assert len(ranks[0].batch_sampler if world == 2 else one.batch_sampler) == \
            len(ResumableWeightedSampler(weights, world, 0, 9)) // (4 // world)
    for a, b, g in zip(r0, r1, whole):
        assert len(a) == len(b) == 2 and a + b == g  # each rank its own half of the global batch
        assert lengths[a].max() <= max(ranks[0].collate_fn.buckets)
    # disjoint shares of the draw: together the ranks take each drawn slot exactly once (a clip
    # drawn twice may land on both ranks, as with ResumableWeightedSampler)
    assert Counter(sum(r0, []) + sum(r1, [])) == Counter(sum(whole, []))
    # each rank pads step i at most to the global batch's bucket (less when its half is a carried remainder)
    pad = ranks[0].collate_fn
    for a, b, g in zip(r0, r1, whole):
        top = pad.padded_length(int(lengths[g].max()))
        assert max(pad.padded_length(int(lengths[a].max())), pad.padded_length(int(lengths[b].max()))) == top


def test_resume_mid_epoch_continues_the_same_batches(train_set):
    ds, _, _, weights, _ = train_set
    for env, micro in ((DistEnv(), 4), (DistEnv(rank=1, world_size=2), 2)):
        loader = train_loader(ds, micro, env, 11, 0, False, sample_weights=weights, num_buckets=3)
        start_epoch(loader, 11, 2, env.rank)
        full = [(w.clone(), y.clone(), n.clone()) for w, y, n in loader]
        start_epoch(loader, 11, 2, env.rank, start_index=3 * micro)
        assert len(loader) == len(full) - 3
        rest = list(loader)
        assert len(rest) == len(full) - 3
        for (w, y, n), (w2, y2, n2) in zip(full[3:], rest):
            assert torch.equal(w, w2) and torch.equal(y, y2) and torch.equal(n, n2)
        with pytest.raises(ValueError, match="multiple of batch_size"):
            start_epoch(loader, 11, 2, env.rank, start_index=micro + 1)


def test_a_bucketed_balanced_run_trains_and_writes_metrics(corpus, tmp_path):
    cfg = load_config("folder", SETTINGS + [f"data.root={corpus}", f"out_dir={tmp_path / 'run'}"])
    assert cfg.data.batching == "bucket" and cfg.data.balanced_sampling
    trainer = Trainer(cfg, verbose=False)
    summary = trainer.fit()
    assert summary["epochs_completed"] == 2
    assert isinstance(trainer.train_loader.batch_sampler, BalancedBucketBatchSampler)
    weights = balanced_sample_weights(trainer.data.train)
    np.testing.assert_allclose(trainer.train_loader.batch_sampler.probabilities, weights / weights.sum())
    steps = len(trainer.data.train) // 4
    records = read_jsonl(next(tmp_path.rglob("metrics.jsonl")))
    assert [r["step"] for r in records] == [steps, 2 * steps]
    assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["val_loss"]) for r in records)
