"""Reports of multi-label runs plot mAP, not accuracy: run folders from a real tiny `helix train`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from helix.cli import main
from helix.data.recipes import get_recipe
from helix.reporting.plots import bars_figure, curve_axis_label, curves_figure, one_metric
from helix.reporting.report import aggregate_runs, build_report, find_run_dirs, load_run

SR = 16000
TINY = ["optim.batch_size=4", "optim.grad_accum_steps=1", "model.overrides.d_model=8", "model.overrides.d_state=2",
        "model.num_layers=2", "data.clip_seconds=0.5", "data.num_workers=0", "device=cpu"]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tagged_run(tmp_path_factory):
    """A run folder written by `helix train --config csv` on a multi-label CSV corpus (2 epochs)."""
    top = tmp_path_factory.mktemp("multilabel_run")
    root = top / "tags"
    rng = np.random.default_rng(0)
    t = np.arange(SR // 2) / SR
    lines = ["path,label"]
    for i in range(15):
        label, freqs = (("engine", (220,)), ("bird", (2400,)), ("bird;engine", (220, 2400)))[i % 3]
        wave = sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs) + 0.01 * rng.standard_normal(len(t))
        root.mkdir(exist_ok=True)
        sf.write(root / f"clip{i:02d}.wav", (0.3 * wave).astype(np.float32), SR)
        lines.append(f'clip{i:02d}.wav,"{label}"')
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    get_recipe("csv").prepare(root, progress=False, workers=1, csv=str(root / "labels.csv"))
    run = top / "runs" / "tags"
    assert main(["train", "--config", "csv", "--data-root", str(root), "--out", str(run), "--epochs", "2",
                 *TINY]) == 0
    return run


def test_multilabel_run_plots_map(tagged_run):
    summary = json.loads((tagged_run / "summary.json").read_text())
    assert summary["metric"] == "map"  # what training wrote: the premise of this test
    runs = [load_run(d) for d in find_run_dirs([tagged_run.parent])]
    rows = aggregate_runs(runs)
    assert [r["metric"] for r in rows] == ["map"]

    bars = bars_figure(rows, title="csv")
    ax = bars.axes[0]
    assert "mAP" in ax.get_ylabel() and "acc" not in ax.get_ylabel()
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx([100 * summary["best_test_map"]])
    assert not [ln for ln in ax.get_lines() if ln.get_label() == "chance"]

    curves = curves_figure(runs, title="csv")
    ax = curves.axes[0]
    assert ax.get_ylabel() == "test mAP (%)"
    history = [json.loads(line) for line in (tagged_run / "metrics.jsonl").read_text().splitlines()]
    raw = ax.get_lines()[0].get_ydata()  # the faint per-epoch line
    assert np.isfinite(raw).all() and raw == pytest.approx([100 * r["test_map"] for r in history])


def test_build_report_of_a_multilabel_run(tagged_run, tmp_path):
    written = build_report([tagged_run.parent], tmp_path / "report")
    assert written["bars"].name == "accuracy.png" and written["curves"].name == "curves.png"
    for key in ("bars", "curves"):
        assert written[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| mAP |" in (tmp_path / "report" / "results.md").read_text()


def test_axis_labels_and_mixed_metrics():
    assert curve_axis_label("test_acc") == "test accuracy (%)" and curve_axis_label("val_map") == "val mAP (%)"
    assert one_metric([]) == "acc" and one_metric(["map", "map"]) == "map"
    with pytest.raises(ValueError, match="mix"):
        one_metric(["acc", "map"])


def test_accuracy_and_map_runs_of_one_dataset_get_their_own_figures(tagged_run, tmp_path):
    import shutil

    import yaml

    from helix.core.metrics import summarize_history

    shutil.copytree(tagged_run, tmp_path / "runs" / "tags")
    plain = tmp_path / "runs" / "plain"  # a single-label run on another CSV corpus (written by hand)
    plain.mkdir()
    (plain / "config.yaml").write_text(yaml.safe_dump({"data": {"name": "csv"}, "model": {"name": "helix_mel"},
                                                       "optim": {"epochs": 2}}))
    history = [{"epoch": e, "val_acc": 0.5, "val_loss": 1.0, "test_acc": 0.4 + 0.1 * e} for e in (1, 2)]
    (plain / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    (plain / "summary.json").write_text(json.dumps({**summarize_history(history), "model": "helix_mel",
                                                    "dataset": "csv", "chance_acc": 0.5}))
    written = build_report([tmp_path / "runs"], tmp_path / "report")
    assert {"bars_acc", "bars_map", "curves_acc", "curves_map"} <= set(written)
    assert written["bars_map"].name == "accuracy_map.png" and written["curves_acc"].is_file()
