"""Class-imbalance helpers: sampling weights and loss weights from labels (no audio decoded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Subset, WeightedRandomSampler

from helix.data.dataset import ClipDataset
from helix.data.labels import MultiLabelClipDataset
from helix.data.sampling import balanced_sample_weights, class_loss_weights, label_table


def _rows(labels):
    # paths never opened: only labels are read
    return [{"path": f"/nowhere/{i}.wav", "label": lab, "frames": 16000, "sample_rate": 16000}
            for i, lab in enumerate(labels)]


def test_single_label_weights_draw_every_class_equally_often():
    ds = ClipDataset(_rows(["a"] * 90 + ["b"] * 9 + ["c"]), ["a", "b", "c"], 1.0)
    w = balanced_sample_weights(ds)
    assert w[0] == pytest.approx(1 / 90) and w[95] == pytest.approx(1 / 9) and w[99] == pytest.approx(1.0)
    draws = list(WeightedRandomSampler(torch.from_numpy(w), 30000, generator=torch.Generator().manual_seed(0)))
    share = np.bincount(ds.labels[draws], minlength=3) / 30000
    assert np.allclose(share, 1 / 3, atol=0.02)
    assert class_loss_weights(ds) == pytest.approx([100 / 270, 100 / 27, 100 / 3])


def test_multi_label_weights_and_pos_weight():
    ds = MultiLabelClipDataset(_rows(["bird"] * 6 + ["bird;rain", "wind"]), ["bird", "rain", "wind"], 1.0)
    assert label_table(ds)[6].tolist() == [1, 1, 0]
    w = balanced_sample_weights(ds)
    assert w[0] == pytest.approx(1 / 7) and w[6] == pytest.approx(1 / 7 + 1) and w[7] == pytest.approx(1.0)
    assert class_loss_weights(ds) == pytest.approx([1 / 7, 7.0, 7.0])


def test_subsets_are_followed_to_the_right_items():
    ds = ClipDataset(_rows(["a", "b", "b", "c", "c", "c"]), ["a", "b", "c"], 1.0)
    inner = Subset(ds, [5, 4, 0, 1])
    outer = Subset(inner, [2, 3])  # -> items 0 and 1 of ds: a, b
    assert label_table(outer).argmax(axis=1).tolist() == [0, 1]
    with pytest.raises(TypeError, match="has no labels to balance"):
        label_table(torch.utils.data.TensorDataset(torch.zeros(3)))
