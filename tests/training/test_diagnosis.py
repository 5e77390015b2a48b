"""Per-class diagnosis of single-label runs: scikit-learn figures, and the run folder's
per_class.csv / confusion_matrix.png from the best-validation model."""

from __future__ import annotations

import csv
import json
import math

import matplotlib.image
import numpy as np
import pytest

from helix.core.diagnosis import per_class_metrics
from helix.training.loop import Trainer


def test_per_class_figures_by_hand():
    targets = np.array([0, 0, 0, 1, 1, 2])
    preds = np.array([0, 0, 1, 1, 0, 1])
    r = per_class_metrics(targets, preds, ["a", "b", "c", "d"])
    np.testing.assert_array_equal(r["confusion"][:3, :3], [[2, 1, 0], [1, 1, 0], [0, 1, 0]])
    acc = [row["accuracy"] for row in r["rows"]]
    assert acc[:3] == pytest.approx([2 / 3, 1 / 2, 0.0]) and math.isnan(acc[3])  # d never occurs
    f1_a, f1_b = 2 * (2 / 3 * 2 / 3) / (4 / 3), 2 * (1 / 3 * 1 / 2) / (1 / 3 + 1 / 2)
    assert [row["f1"] for row in r["rows"]][:3] == pytest.approx([f1_a, f1_b, 0.0])
    assert r["macro_f1"] == pytest.approx((f1_a + f1_b) / 3)  # over the three classes present
    assert r["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 3)


def test_run_writes_per_class_table_and_confusion_png_of_the_best_model(tiny):
    cfg = tiny("optim.epochs=3")
    summary = Trainer(cfg, verbose=False).fit()
    out = cfg.out_dir
    with open(f"{out}/per_class.csv") as f:
        rows = list(csv.DictReader(f))
    support = [int(r["support"]) for r in rows]
    assert sum(support) == 24  # the whole test set
    hits = sum(float(r["accuracy"]) * n for r, n in zip(rows, support))
    # the figures are those of the best-validation epoch's model, not the last one
    assert hits / 24 == pytest.approx(summary["test_acc_at_best_val"], abs=1e-3)
    image = matplotlib.image.imread(f"{out}/confusion_matrix.png")
    assert image.ndim == 3 and min(image.shape[:2]) > 100
    stored = json.loads(open(f"{out}/summary.json").read())
    assert 0.0 <= stored["test_macro_f1_at_best_val"] <= 1.0
    # helix report lists them under the results table
    from helix.cli import main

    assert main(["report", str(out), "--out", f"{out}/report", "--no-plots"]) == 0
    text = open(f"{out}/report/results.md").read()
    assert "## Per class (test set, best validation epoch, %)" in text and "confusion_matrix.png" in text
    first = rows[0]
    assert f"| {first['class']} | {first['support']} | {100 * float(first['accuracy']):.2f} |" in text
