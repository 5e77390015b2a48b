"""The GPU's one-gather time shift moves exactly the samples the CPU's per-clip roll moves (with and
without lengths, negative shifts and shifts longer than a clip)."""

from __future__ import annotations

import pytest
import torch

from helix.training.augment import roll_gather, roll_within


@pytest.mark.parametrize("with_lengths", [False, True])
def test_gather_equals_per_clip_roll(with_lengths):
    g = torch.Generator().manual_seed(0)
    wave = torch.randn(6, 97, generator=g)
    shifts = torch.tensor([3, -7, 0, 120, -250, 96])
    lengths = torch.tensor([97, 20, 33, 11, 97, 1]) if with_lengths else None
    rolled = roll_within(wave, shifts, lengths)  # CPU: a roll per clip
    assert torch.equal(roll_gather(wave, shifts, lengths), rolled)
    for b in range(6):
        n = int(lengths[b]) if with_lengths else 97
        assert torch.equal(rolled[b], torch.cat([torch.roll(wave[b, :n], int(shifts[b])), wave[b, n:]]))
