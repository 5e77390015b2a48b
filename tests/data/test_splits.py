"""The seeded, stratified, group-aware split made once at prepare for the user's own corpora."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from helix.data.splits import SplitError, split_fractions, stratified_split


def _per_label(labels, splits):
    return Counter((name, s) for names, s in zip(labels, splits) for name in names)


def test_single_label_is_stratified_seeded_and_repeatable():
    labels = [["dog"]] * 50 + [["cat"]] * 20 + [["owl"]] * 3
    a = stratified_split(labels, seed=0)
    c = _per_label(labels, a)
    assert (c["dog", "train"], c["dog", "validation"], c["dog", "test"]) == (40, 5, 5)
    assert (c["cat", "train"], c["cat", "validation"], c["cat", "test"]) == (16, 2, 2)
    assert (c["owl", "train"], c["owl", "validation"], c["owl", "test"]) == (1, 1, 1)  # at least one each
    assert stratified_split(labels, seed=0) == a
    assert stratified_split(labels, seed=1) != a
    assert _per_label(labels, stratified_split(labels, seed=1)) == c  # another draw, same proportions


def test_groups_stay_in_one_split_and_every_class_reaches_every_split():
    rng = random.Random(3)
    labels, groups = [], []
    for cls in ("a", "b", "c"):
        for g in range(6):
            size = rng.choice([1, 2, 7])  # uneven groups: the large ones must not starve a split
            labels += [[cls]] * size
            groups += [f"{cls}-spk{g}"] * size
    splits = stratified_split(labels, groups, seed=0)
    where = {}
    for g, s in zip(groups, splits):
        assert where.setdefault(g, s) == s, f"group {g} in two splits"
    c = _per_label(labels, splits)
    assert all(c[cls, s] > 0 for cls in "abc" for s in ("train", "validation", "test"))


def test_two_large_groups_and_one_small_still_reach_every_split():
    labels = [["x"]] * 11
    groups = ["big"] * 5 + ["big2"] * 5 + ["small"]  # by demand alone both big groups would go to train
    c = Counter(stratified_split(labels, groups, seed=0))
    assert set(c) == {"train", "validation", "test"}


def test_a_class_with_one_file_cannot_be_split_and_says_so():
    labels = [["dog"]] * 10 + [["cat"]]
    names = [f"root/dog/{i}.wav" for i in range(10)] + ["root/cat/only.wav"]
    with pytest.raises(SplitError, match=r"cannot split: each label needs at least 3 files .*'cat' has 1 file\(s\) "
                                         r"\(root/cat/only\.wav\)"):
        stratified_split(labels, names=names)


def test_too_few_groups_is_named_even_with_many_files():
    labels = [["dog"]] * 10
    groups = ["a"] * 5 + ["b"] * 5
    with pytest.raises(SplitError, match=r"3 groups .*'dog' has 10 file\(s\) in 2 group\(s\)"):
        stratified_split(labels, groups)


def test_multi_label_every_label_in_every_split_near_the_fractions():
    rng = random.Random(0)
    tags = ["bird", "car", "rain", "speech", "wind"]
    labels = [sorted(rng.sample(tags, rng.choice([1, 2, 3]))) for _ in range(300)]
    splits = stratified_split(labels, seed=0)
    c = _per_label(labels, splits)
    totals = Counter(name for names in labels for name in names)
    for tag in tags:
        for s, f in split_fractions(0.1, 0.1).items():
            assert abs(c[tag, s] - f * totals[tag]) <= 0.05 * totals[tag] + 2, (tag, s)
    sizes = Counter(splits)
    assert abs(sizes["test"] - 30) <= 6 and abs(sizes["validation"] - 30) <= 6


def test_fixed_items_keep_their_split_and_new_ones_fill_the_gaps():
    labels = [["a"]] * 20 + [["b"]] * 20
    first = stratified_split(labels, seed=0)
    # five new files per class arrive; a rerun keeps the recorded twenty
    labels2 = labels + [["a"]] * 5 + [["b"]] * 5
    second = stratified_split(labels2, fixed=first + [""] * 10, seed=0)
    assert second[:40] == first
    c = _per_label(labels2, second)
    assert c["a", "train"] + c["a", "validation"] + c["a", "test"] == 25
    assert c["a", "train"] == 20  # targets 20/2.5/2.5 -> 20/3/2: the new files went where they were wanted


def test_fixed_group_in_two_splits_is_refused():
    with pytest.raises(SplitError, match=r"group 'spk1' is recorded in test and train"):
        stratified_split([["a"]] * 6, ["spk1", "spk1", "", "", "", ""], fixed=["train", "test", "", "", "", ""])


def test_zero_fraction_split_gets_nothing():
    labels = [["a"]] * 10 + [["b"]] * 10
    splits = stratified_split(labels, fractions={"train": 0.8, "validation": 0.2, "test": 0.0})
    assert Counter(splits) == {"train": 16, "validation": 4}


def test_fractions_are_checked():
    with pytest.raises(ValueError, match="leave some files for training"):
        split_fractions(0.5, 0.5)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\)"):
        split_fractions(-0.1, 0.1)
