import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from helix.data.batching import BucketBatchSampler, PadCollate, bucket_lengths


class Clips(Dataset):
    """Clips of the given lengths: sample i of clip k is k + 1 (so padding, 0, is visible)."""

    def __init__(self, lengths):
        self.lengths = lengths

    def __len__(self):
        return len(self.lengths)

    def __getitem__(self, k):
        return torch.full((self.lengths[k],), float(k + 1)), k % 3


def test_collate_pads_to_the_batch_and_returns_lengths():
    wave, labels, lengths = PadCollate()([(torch.ones(5), 1), (torch.ones(3) * 2, 0)])
    assert wave.shape == (2, 5) and lengths.dtype == torch.int64 and lengths.tolist() == [5, 3]
    assert wave[1].tolist() == [2, 2, 2, 0, 0] and labels.tolist() == [1, 0]


def test_collate_rounds_up_to_a_bucket():
    wave, _, lengths = PadCollate([4, 8, 16])([(torch.ones(5), 0), (torch.ones(3), 0)])
    assert wave.shape == (2, 8) and lengths.tolist() == [5, 3]
    assert PadCollate([4, 8]).padded_length(9) == 9  # longer than every bucket: its own length


def test_collate_refuses_bad_items():
    with pytest.raises(ValueError, match="non-empty"):
        PadCollate()([(torch.ones(2, 3), 0)])


def test_bucket_lengths_follow_quantiles():
    assert bucket_lengths([100] * 10 + [1000] * 10, 2, multiple=160) == [160, 1120]
    assert bucket_lengths([5, 500], 4, max_length=300)[-1] == 300
    with pytest.raises(ValueError, match="n_buckets"):
        bucket_lengths([1], 0)


def lengths_corpus(n=203, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(100, 4000, size=n).tolist()


def test_every_batch_is_one_bucket_and_an_epoch_sees_nearly_every_clip():
    lengths = lengths_corpus()
    buckets = bucket_lengths(lengths, 4)
    s = BucketBatchSampler(lengths, batch_size=8, buckets=buckets, seed=1)
    batches = list(s)
    assert len(batches) == len(s) == len(lengths) // 8
    flat = [i for b in batches for i in b]
    assert len(set(flat)) == len(flat)  # no repeats
    assert len(lengths) - len(flat) < 8 * len(buckets)  # only bucket remainders dropped
    assert s.padding_fraction() < 0.2
    fixed = 1 - np.mean(lengths) / max(lengths)
    assert s.padding_fraction() < fixed / 2


def test_ranks_partition_each_global_batch_in_lockstep():
    lengths = lengths_corpus()
    buckets = bucket_lengths(lengths, 3)
    single = list(BucketBatchSampler(lengths, 8, buckets, num_replicas=1, seed=5))
    ranks = [list(BucketBatchSampler(lengths, 4, buckets, num_replicas=2, rank=r, seed=5)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    for g, a, b in zip(single, *ranks):
        assert a + b == g  # step i on every rank is a slice of the single-process batch i


def test_epochs_differ_and_resume_is_exact():
    lengths = lengths_corpus()
    s = BucketBatchSampler(lengths, 4, bucket_lengths(lengths, 3), seed=2)
    s.set_epoch(3)
    full = list(s)
    s.set_epoch(4)
    assert list(s) != full
    s.set_epoch(3, start_index=4 * 7)
    assert list(s) == full[7:] and len(s) == len(full) - 7
    with pytest.raises(ValueError, match="multiple of batch_size"):
        s.set_epoch(3, start_index=5)


def test_through_a_dataloader_with_the_collate():
    lengths = [300, 310, 2000, 2040, 320, 1990]
    ds = Clips(lengths)
    sampler = BucketBatchSampler(lengths, 3, buckets=[512, 2048, 4096])
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=PadCollate(sampler.buckets))
    shapes = sorted(tuple(w.shape) for w, _, _ in loader)
    assert shapes == [(3, 512), (3, 2048)]
    for wave, _, lens in loader:
        for row, n in zip(wave, lens):
            assert torch.all(row[n:] == 0) and torch.all(row[:n] > 0)
