"""Results tables and figures from run folders (made by hand here, no training)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from helix.reporting.plots import moving_average
from helix.reporting.report import aggregate_runs, build_report, find_run_dirs, load_run, split_model_name


def _fake_run(folder: Path, model: str, fold: int | None, test_accs: list[float], finished: bool = True,
              dataset: str = "esc50", planned: int | None = None):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(
        {"data": {"name": dataset, "fold": fold}, "model": {"name": model, "overrides": {}},
         "optim": {"epochs": planned or len(test_accs)}}))
    history = [{"epoch": i + 1, "val_acc": a - 0.01 * (i % 2), "val_loss": 1.0, "test_acc": a}
               for i, a in enumerate(test_accs)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    if finished:
        from helix.core.metrics import summarize_history

        s = summarize_history(history)
        s.update(model=model, dataset=dataset, fold=fold, epochs_planned=len(test_accs), chance_acc=0.02,
                 params=123456)
        (folder / "summary.json").write_text(json.dumps(s))


@pytest.fixture
def grid(tmp_path):
    for model, base in (("pure_mamba_raw", 0.5), ("helix_raw", 0.4), ("pure_mamba_mel", 0.45)):
        for fold in (1, 2):
            _fake_run(tmp_path / model / f"fold{fold}", model, fold, [base - 0.1, base + 0.01 * fold, base])
    _fake_run(tmp_path / "helix_mel" / "fold1", "helix_mel", 1, [0.2, 0.3], finished=False, planned=5)
    return tmp_path


def test_rows_aggregate_folds(grid):
    runs = [load_run(d) for d in find_run_dirs([grid])]
    assert len(runs) == 7
    rows = {r["model"]: r for r in aggregate_runs(runs)}
    mamba = rows["pure_mamba_raw"]
    assert mamba["runs"] == 2 and mamba["backbone"] == "pure_mamba" and mamba["frontend"] == "raw"
    assert mamba["best_test_acc_mean"] == pytest.approx((0.51 + 0.52) / 2)
    assert mamba["best_test_acc_std"] == pytest.approx(0.00707, abs=1e-4)
    assert mamba["final_test_acc_mean"] == pytest.approx(0.5)
    unfinished = rows["helix_mel"]
    assert not unfinished["complete"] and unfinished["epochs"] == 2 and unfinished["epochs_planned"] == 5
    assert unfinished["best_test_acc_mean"] == pytest.approx(0.3)
    order = [r["model"] for r in aggregate_runs(runs)]
    assert order.index("pure_mamba_mel") < order.index("helix_mel")  # paper order within a frontend


def test_build_report_writes_tables_and_pngs(grid):
    out = grid / "report"
    written = build_report([grid], out)
    md = (out / "results.md").read_text()
    assert "Best test (paper protocol)" in md and "Test @ best val" in md
    assert "51.50 +- 0.71" in md and "2/5" in md  # mean +- std over folds; unfinished epochs shown
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["model"] for r in rows} == {"pure_mamba_raw", "helix_raw", "pure_mamba_mel", "helix_mel"}
    for key in ("bars", "curves"):
        assert written[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_or_empty_folders_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError):
        build_report([tmp_path / "nope"], tmp_path)
    with pytest.raises(FileNotFoundError, match="no run folders"):
        build_report([tmp_path], tmp_path / "out")


def test_helpers():
    assert split_model_name("pure_attention_mel") == ("pure_attention", "mel")
    assert split_model_name("aum_tiny") == ("aum_tiny", "-")
    assert list(moving_average([1, 2, 3, 4], 2)) == [1, 1.5, 2.5, 3.5]
