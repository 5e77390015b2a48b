"""Your own sounds end to end on CPU: `helix data prepare folder` -> `helix train --config folder`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from helix.cli import main
from helix.models.checkpoint import load_checkpoint

_spec = importlib.util.spec_from_file_location("helix_test_corpora", Path(__file__).parents[1] / "data" / "corpora.py")
corpora = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(corpora)

TINY = ["data.num_workers=0", "model.num_layers=2", "model.overrides={d_model: 16, d_state: 4}", "optim.epochs=1",
        "optim.batch_size=4", "device=cpu"]


def _folder(root: Path) -> Path:
    for c, name in enumerate(("hum", "whistle")):
        for i in range(6):
            corpora.write_audio(root / name / f"{i}.wav", 0.2 + 0.05 * (i % 3), (16000, 22050)[i % 2],
                                freq=200 + 1500 * c, channels=1 + i % 2)
    return root


def test_prepare_then_train_with_the_folder_preset(tmp_path, capsys):
    root = _folder(tmp_path / "mine")
    assert main(["data", "prepare", "folder", "--root", str(root), "--no-progress"]) == 0
    assert "-> clip length 0.3 s when training" in capsys.readouterr().out
    out = tmp_path / "run"
    assert main(["train", "--config", "folder", "--data-root", str(root), "--out", str(out), *TINY]) == 0
    assert "clip length 0.3 s (chosen from the data's durations" in capsys.readouterr().out
    ck = load_checkpoint(out / "best.pt")
    assert ck["class_names"] == ["hum", "whistle"] and ck["clip_seconds"] == pytest.approx(0.3)


def test_multi_label_data_is_refused_until_multi_label_training_exists(tmp_path, capsys):
    root = tmp_path / "tags"
    lines = ["path,label"]
    for i in range(12):
        corpora.write_audio(root / f"{i}.wav", 0.2, 16000)
        lines.append(f"{i}.wav,{('a', 'b', 'a;b')[i % 3]}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    assert main(["data", "prepare", "csv", "--root", str(root), "--csv", str(root / "labels.csv"), "--no-progress"]) == 0
    assert main(["train", "--config", "csv", "--data-root", str(root), "--out", str(tmp_path / "run"), *TINY]) == 1
    assert "is multi-label" in capsys.readouterr().err
