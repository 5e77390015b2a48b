"""`helix train`: every flag on every preset, key=value overrides, errors, a real tiny run."""

from __future__ import annotations

import json

import pytest
import yaml

from helix.cli import main
from helix.training.config_io import load_config

PRESETS = ("esc50", "urbansound8k", "speechcommands", "concat_speechcommands", "librispeech_30s",
           "voxpopuli_300s", "demo", "demo_concat")
TINY = ["data.name=synthetic_order", "data.clip_seconds=0.25", "data.num_workers=0",
        "data.task_kwargs={num_train: 32, num_val: 8, num_test: 8}", "model.num_layers=2",
        "model.overrides={d_model: 32, d_state: 4}", "optim.batch_size=8"]


# tiny models: one torch thread per test process (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("preset", PRESETS)
def test_every_flag_works_on_every_preset(preset, capsys, tmp_path):
    argv = ["train", "--config", preset, "--model", "pure_attention_mel", "--epochs", "3", "--batch-size", "16",
            "--data-root", str(tmp_path / "data"), "--device", "cpu", "--out", str(tmp_path / "run"),
            "--seed", "5", "optim.lr=1e-3", "--print-config"]
    assert main(argv) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["name"] == "pure_attention_mel" and cfg["optim"]["epochs"] == 3
    assert cfg["optim"]["batch_size"] == 16 and cfg["data"]["root"] == str(tmp_path / "data")
    assert cfg["device"] == "cpu" and cfg["out_dir"] == str(tmp_path / "run") and cfg["seed"] == 5
    assert cfg["optim"]["lr"] == 1e-3
    assert load_config(preset).data.name == cfg["data"]["name"]  # the rest comes from the preset


def test_default_run_folder_names_preset_model_and_fold(capsys):
    assert main(["train", "--config", "esc50", "--fold", "2", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["out_dir"] == "runs/esc50/helix_raw/fold2"


def test_user_errors_exit_1_with_a_message(capsys, tmp_path):
    assert main(["train", "--config", "esc50", "optim.nope=1"]) == 1
    assert "unknown config key 'optim.nope'" in capsys.readouterr().err
    assert main(["train", "--config", "esc50", "--model", "no_such_model", "--out", str(tmp_path / "r"),
                 "--fold", "1", "--device", "cpu"]) == 1
    assert "helix: error:" in capsys.readouterr().err
    assert main(["train", "--epochs", "1"]) == 1
    assert "--config is required" in capsys.readouterr().err


def test_tiny_run_end_to_end(capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--config", "demo", "--epochs", "1", "--out", str(out), *TINY]) == 0
    text = capsys.readouterr().out
    assert "best test (paper protocol)" in text and "chance level" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_completed"] == 1 and summary["model"] == "helix_raw"
    # a second start refuses to overwrite; --resume of a finished run has nothing left to do
    assert main(["train", "--config", "demo", "--epochs", "1", "--out", str(out), *TINY]) == 1
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "--out", str(out), "--resume"]) == 0


def _corpora():
    """The data tests' tiny corpora builder, loaded by path (tests/data is another test package)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("_helix_test_corpora",
                                                  Path(__file__).parents[1] / "data" / "corpora.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_fold_of_a_real_fold_dataset(capsys, tmp_path):
    """The esc50 preset through helix.data on a tiny ESC-50 in its real layout: fold 2 is the test
    fold, the next fold the (official) validation split."""
    from helix.data.recipes import get_recipe

    root = tmp_path / "esc50"
    _corpora().make_esc50(root, per_fold=2)
    get_recipe("esc50").prepare(root, progress=False, workers=1)
    out = tmp_path / "run"
    argv = ["train", "--config", "esc50", "--fold", "2", "--epochs", "1", "--batch-size", "2", "--device", "cpu",
            "--data-root", str(root), "--out", str(out), "data.clip_seconds=0.25", "data.num_workers=0",
            "model.num_layers=2", "model.overrides={d_model: 32, d_state: 4}"]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["fold"] == 2 and summary["num_classes"] == 3 and summary["val_source"] == "official"
    assert summary["epochs_completed"] == 1
