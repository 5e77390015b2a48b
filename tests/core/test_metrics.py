"""Run summaries: final, best-validation-selected and best-test (paper protocol) accuracies."""

from __future__ import annotations

import math

import pytest

from helix.core.metrics import best_val_index, format_pct, mean_std, summarize_history


def _h(*rows):
    return [dict(epoch=i + 1, val_acc=v, val_loss=l, test_acc=t) for i, (v, l, t) in enumerate(rows)]


def test_three_accuracies_come_from_the_right_epochs():
    history = _h((0.5, 1.0, 0.40), (0.7, 0.8, 0.55), (0.6, 0.7, 0.65), (0.65, 0.6, 0.60))
    s = summarize_history(history)
    assert s["final_test_acc"] == 0.60 and s["final_epoch"] == 4
    assert s["best_val_epoch"] == 2 and s["test_acc_at_best_val"] == 0.55
    assert s["best_test_acc"] == 0.65 and s["best_test_epoch"] == 3
    assert s["epochs_completed"] == 4


def test_validation_ties_go_to_lower_loss_then_earlier_epoch():
    assert best_val_index(_h((0.7, 0.9, 0), (0.7, 0.5, 0), (0.7, 0.5, 0))) == 1
    assert best_val_index([{"epoch": 1, "val_acc": math.nan}]) is None
    with pytest.raises(ValueError):
        summarize_history([])


def test_mean_std_is_the_sample_std():
    mean, std = mean_std([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6) and std == pytest.approx(0.1)
    assert mean_std([0.4]) == (0.4, 0.0)
    assert all(math.isnan(v) for v in mean_std([]))


def test_format_pct():
    assert format_pct(0.551) == "55.10"
    assert format_pct(0.551, 0.0333, 5) == "55.10 +- 3.33"
    assert format_pct(0.551, 0.0, 1) == "55.10" and format_pct(None) == "-"
