"""Multi-label metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helix.core.multilabel import labels_above, multilabel_metrics


def test_ap_and_auc_match_hand_computed_values():
    # class 0: positives ranked 1st and 3rd -> AP = (1/1 + 2/3) / 2; AUC = 3 of 4 pairs ordered
    # class 1: a perfect ranking -> AP 1, AUC 1
    targets = np.array([[1, 0], [0, 0], [1, 1], [0, 1]])
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.9], [0.1, 0.8]])
    m = multilabel_metrics(targets, scores, ["dog", "rain"])
    assert m["per_class_ap"] == pytest.approx({"dog": 5 / 6, "rain": 1.0})
    assert m["per_class_auc"] == pytest.approx({"dog": 0.75, "rain": 1.0})
    assert m["mAP"] == pytest.approx((5 / 6 + 1) / 2)
    assert m["macro_auc"] == pytest.approx(0.875)
    assert m["unscored"] == []


def test_logits_and_probabilities_score_the_same():
    rng = np.random.default_rng(0)
    targets = (rng.random((40, 5)) < 0.3).astype(np.float32)
    targets[0] = 1  # every class has a positive
    logits = torch.from_numpy(rng.normal(size=(40, 5)).astype(np.float32)) + 2 * torch.from_numpy(targets)
    a = multilabel_metrics(torch.from_numpy(targets), logits)
    b = multilabel_metrics(targets, torch.sigmoid(logits))
    assert a["mAP"] == pytest.approx(b["mAP"]) and a["macro_auc"] == pytest.approx(b["macro_auc"])
    assert 0.5 < a["mAP"] <= 1.0


def test_a_class_without_positives_is_left_out_not_counted_as_zero():
    targets = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1]])
    scores = np.array([[0.9, 0.5, 0.2], [0.1, 0.4, 0.3], [0.8, 0.6, 0.9]])
    m = multilabel_metrics(targets, scores, ["a", "b", "c"])
    assert m["unscored"] == ["b"] and math.isnan(m["per_class_ap"]["b"])
    assert m["mAP"] == pytest.approx(1.0)  # a: perfect; c: all positive -> AP 1
    assert math.isnan(m["per_class_auc"]["c"]) and m["macro_auc"] == pytest.approx(1.0)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match=r"differ in shape"):
        multilabel_metrics(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"only 0 and 1"):
        multilabel_metrics(np.full((3, 2), 0.5), np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"NaN or infinity"):
        multilabel_metrics(np.ones((3, 2)), np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match=r"must be \(N, C\)"):
        multilabel_metrics(np.ones(3), np.ones(3))


def test_labels_above_threshold_highest_first():
    p = np.array([[0.2, 0.7, 0.9], [0.1, 0.1, 0.1]])
    assert labels_above(p, ["a", "b", "c"], 0.5) == [[("c", pytest.approx(0.9)), ("b", pytest.approx(0.7))], []]
    with pytest.raises(ValueError, match="threshold"):
        labels_above(p, ["a", "b", "c"], 1.5)
