"""`helix grid` trains backbones x frontends and writes the table and plots; re-running skips
finished runs; `helix report` rebuilds the same table from the run folders."""

from __future__ import annotations

import pytest

from helix.cli import main

TINY = ["data.name=synthetic_order", "data.clip_seconds=0.25", "data.num_workers=0",
        "data.task_kwargs={num_train: 16, num_val: 8, num_test: 8}", "model.num_layers=2",
        "model.overrides={d_model: 32, d_state: 4}", "optim.batch_size=8", "device=cpu"]


# tiny models: one torch thread per test process (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def test_grid_then_report(capsys, tmp_path):
    out = tmp_path / "grid"
    argv = ["grid", "--config", "demo", "--backbones", "pure_mamba,pure_attention", "--frontends", "raw,mel",
            "--epochs", "1", "--out", str(out), *TINY]
    assert main(argv) == 0
    for model in ("pure_mamba_raw", "pure_attention_raw", "pure_mamba_mel", "pure_attention_mel"):
        assert (out / model / "summary.json").is_file()
    for name in ("results.md", "results.csv", "accuracy.png", "curves.png"):
        assert (out / name).is_file(), name
    table = (out / "results.md").read_text()
    assert "Pure Mamba" in table and "Pure Attention" in table and "mel" in table
    capsys.readouterr()

    assert main(argv) == 0  # a re-run reuses the finished runs
    assert capsys.readouterr().out.count("already finished") == 4

    (out / "results.md").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "results.md").read_text() == table


def test_grid_and_report_user_errors(capsys, tmp_path):
    assert main(["grid", "--config", "demo", "--backbones", "transformer"]) == 1
    assert "--backbones takes a comma-separated subset" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 1
    assert "no such run folder" in capsys.readouterr().err


def test_grid_out_that_is_a_file_is_refused(capsys, tmp_path):
    path = tmp_path / "afile"
    path.write_text("x")
    assert main(["grid", "--config", "demo", "--out", str(path), *TINY]) == 1
    assert capsys.readouterr().err.strip() == f"helix: error: --out {path} is an existing file, not a folder; " \
                                              "give a folder path"
    assert path.read_text() == "x"
