"""The fold driver: one config per fold with its own run folder, mean +- std over folds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helix.training.config_io import load_config
from helix.training.kfold import fold_configs, run_experiment


def test_fold_configs_cover_every_fold_in_its_own_folder():
    cfg = load_config("esc50", ["out_dir=runs/x"])
    configs = fold_configs(cfg)
    assert [c.data.fold for c in configs] == [1, 2, 3, 4, 5]
    assert [c.out_dir for c in configs] == [str(Path("runs/x") / f"fold{k}") for k in range(1, 6)]
    assert [c.data.fold for c in fold_configs(cfg, [2, 4])] == [2, 4]
    one = load_config("esc50", ["fold=3"])
    assert fold_configs(one) == [one]
    assert len(fold_configs(load_config("urbansound8k"))) == 10
    with pytest.raises(ValueError, match="no folds"):
        fold_configs(load_config("speechcommands"), [1])
    with pytest.raises(ValueError, match="data.fold must be in 1..5"):
        fold_configs(cfg, [6])


def test_run_experiment_aggregates_folds(tiny, tmp_path):
    # the synthetic task ignores data.fold; what is tested is the driver's bookkeeping
    cfg = tiny("data.num_folds=2", "optim.epochs=1", out="kfold")
    result = run_experiment(cfg, verbose=False)
    assert [r["fold"] for r in result["runs"]] == [1, 2]
    accs = [r["best_test_acc"] for r in result["runs"]]
    assert result["best_test_acc_mean"] == pytest.approx(sum(accs) / 2)
    saved = json.loads((Path(cfg.out_dir) / "kfold_summary.json").read_text())
    assert saved["best_test_acc_mean"] == pytest.approx(result["best_test_acc_mean"])
    # a finished experiment is reused, not retrained, when asked to skip finished runs
    again = run_experiment(cfg, resume=True, skip_finished=True, verbose=False)
    assert again["runs"] == result["runs"]
