"""`helix demo` (shrunk by overrides): both synthetic tasks, three backbones, the comparison table
with chance level, plots, next steps, and it only ever replaces its own folder."""

from __future__ import annotations

import pytest

from helix.cli import main

SHRINK = ["data.clip_seconds=0.5", "data.task_kwargs.num_train=16", "data.task_kwargs.num_val=8",
          "data.task_kwargs.num_test=8", "optim.batch_size=8", "model.overrides={d_model: 32, d_state: 4}",
          "model.num_layers=2"]


# tiny models: one torch thread per test process (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow  # started first (tests/conftest.py)
def test_demo_trains_three_backbones_on_both_tasks(capsys, tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--epochs", "1", "--out", str(out), *SHRINK]) == 0
    text = capsys.readouterr().out
    for label in ("Pure Mamba", "HELIX", "Pure Attention"):
        assert label in text
    assert "chance" in text and "16.67" in text  # 6 ordered pairs of 3 events
    assert "helix train --config" in text  # what to run next
    assert text.count("1 epochs, 2 updates of batch 8") == 2  # each task's schedule: 16 clips // 8
    for task in ("order", "concat"):
        for name in ("results.md", "accuracy.png", "curves.png"):
            assert (out / task / name).is_file(), (task, name)
        assert (out / task / "helix" / "best.pt").is_file()
    # the next demo replaces the previous one
    assert main(["demo", "--tasks", "order", "--epochs", "1", "--workers", "1", "--out", str(out), *SHRINK]) == 0
    assert not (out / "concat").exists()


def test_demo_never_deletes_a_foreign_folder(capsys, tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    assert main(["demo", "--out", str(tmp_path)]) == 1
    assert "not a helix demo folder" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "keep"


def test_demo_out_that_is_a_file_is_refused_and_threads_are_checked(capsys, tmp_path):
    path = tmp_path / "afile"
    path.write_text("x")
    assert main(["demo", "--out", str(path)]) == 1
    assert capsys.readouterr().err.strip() == f"helix: error: --out {path} is an existing file, not a folder; " \
                                              "give a folder path"
    assert path.read_text() == "x"
    assert main(["demo", "--threads", "0", "--out", str(tmp_path / "d")]) == 1
    assert "--threads must be >= 1" in capsys.readouterr().err


def test_demo_presets_train_past_the_order_blind_plateau():
    """HELIX sits near 50% on task (a) until ~250-300 updates of batch 16 (224 updates of batch 32
    left it at 48%); the preset must give it well past that, and task (b) its ~200."""
    from helix.commands.demo import schedule
    from helix.training.config_io import load_config

    order, concat = load_config("demo", []), load_config("demo_concat", [])
    assert order.optim.batch_size == concat.optim.batch_size == 16
    updates = {cfg.data.name: cfg.data.task_kwargs["num_train"] // 16 * cfg.optim.epochs for cfg in (order, concat)}
    assert updates["synthetic_order"] >= 450 and updates["synthetic_concat_order"] >= 200, updates
    assert schedule(order) == f"{order.optim.epochs} epochs, {updates['synthetic_order']} updates of batch 16"


def test_demo_pool_starts_the_longest_trainings_first():
    """Two workers finish together only if the short attention runs come last (the old order, by
    clip length, started task (b)'s attention run before task (a)'s Mamba runs)."""
    from helix.commands.demo import estimated_cost
    from helix.training.config_io import load_config

    jobs = {(t, b): load_config(p, [f"model.name={b}_raw"]) for t, p in (("order", "demo"), ("concat", "demo_concat"))
            for b in ("pure_mamba", "helix", "pure_attention")}
    order = sorted(jobs, key=lambda k: -estimated_cost(jobs[k], k[1]))
    assert [b for _, b in order[-2:]] == ["pure_attention"] * 2, order
