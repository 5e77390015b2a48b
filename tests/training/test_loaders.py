"""Samplers and splits: sharding equals the single-process batch, mid-epoch skipping, exact eval
shards, a seeded validation hold-out, and the global-batch arithmetic."""

from __future__ import annotations

import pytest

from helix.core.distributed import ResumableDistributedSampler, ShardSampler
from helix.training.loaders import build_run_data, micro_batch_size, split_validation


def _batches(indices, size):
    return [indices[i:i + size] for i in range(0, len(indices) - size + 1, size)]


@pytest.mark.parametrize("n", [64, 67])
def test_two_ranks_split_each_global_batch_of_one_rank(n):
    data = list(range(n))
    single = ResumableDistributedSampler(data, num_replicas=1, rank=0, seed=3)
    ranks = [ResumableDistributedSampler(data, num_replicas=2, rank=r, seed=3) for r in (0, 1)]
    for s in (single, *ranks):
        s.set_epoch(2)
    one = _batches(list(single), 8)
    two = [_batches(list(s), 4) for s in ranks]
    assert len(one) == len(two[0]) == len(two[1]) == n // 8
    for b, b0, b1 in zip(one, *two):
        assert sorted(b) == sorted(b0 + b1)


def test_epochs_reshuffle_and_start_index_skips():
    s = ResumableDistributedSampler(list(range(40)), num_replicas=1, rank=0, seed=0)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert e0 != e1 and sorted(e0) == list(range(40))
    s.set_epoch(1, start_index=12)
    assert list(s) == e1[12:] and len(s) == 28


def test_shard_sampler_covers_everything_once():
    shards = [list(ShardSampler(11, r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))


def test_validation_hold_out_is_seeded_and_disjoint():
    data = list(range(100))
    train, val = split_validation(data, 0.2)
    train2, val2 = split_validation(data, 0.2)
    assert list(val.indices) == list(val2.indices) and len(val) == 20 and len(train) == 80
    assert not set(train.indices) & set(val.indices)
    with pytest.raises(ValueError, match="val_fraction"):
        split_validation(data, 0.0)


def test_micro_batch_arithmetic():
    assert micro_batch_size(32, 2, 4) == 4
    with pytest.raises(ValueError, match="not divisible"):
        micro_batch_size(32, 3, 1)


@pytest.mark.parametrize("value, shown", [("abc", "'abc'"), ("2.5", "2.5"), ("true", "True")])
def test_synthetic_options_of_the_wrong_type_are_named(value, shown):
    from helix.training.config_io import load_config

    cfg = load_config(None, ["data.name=synthetic_order", f"data.task_kwargs.num_train={value}"])
    with pytest.raises(ValueError, match=rf"data.task_kwargs.num_train: expected int, got {shown}"):
        build_run_data(cfg.data)
