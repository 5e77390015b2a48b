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


def _tags(root: Path) -> Path:
    """A multi-label CSV corpus: a low tone ``a``, a high tone ``b``, and files carrying both."""
    lines = ["path,label"]
    for i in range(18):
        label = ("a", "b", "a;b")[i % 3]
        freq = {"a": 300.0, "b": 2000.0, "a;b": 1000.0}[label]
        corpora.write_audio(root / f"{i}.wav", 0.2, 16000, freq=freq)
        lines.append(f"{i}.wav,{label}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def test_multi_label_prepare_train_report_predict(tmp_path, capsys):
    import json

    root = _tags(tmp_path / "tags")
    assert main(["data", "prepare", "csv", "--root", str(root), "--csv", str(root / "labels.csv"), "--no-progress"]) == 0
    out = tmp_path / "run"
    assert main(["train", "--config", "csv", "--data-root", str(root), "--out", str(out), *TINY,
                 "optim.epochs=2"]) == 0
    printed = capsys.readouterr().out
    assert "val mAP" in printed and "test mAP (%) at" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric"] == "map" and summary["multilabel"] is True
    assert 0.0 <= summary["test_map_at_best_val"] <= 1.0
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("val_map" in r and "test_macro_auc" in r for r in history)
    ck = load_checkpoint(out / "best.pt")
    assert ck["multilabel"] is True and ck["class_names"] == ["a", "b"]
    assert not (out / "confusion_matrix.png").exists()  # single-label runs only
    # best.pt is the epoch with the best validation mAP (first on ties)
    best = max(history, key=lambda r: (r["val_map"], -r["val_loss"]))
    assert ck["epoch"] == best["epoch"]

    assert main(["report", str(out), "--out", str(tmp_path / "report"), "--no-plots"]) == 0
    assert "| mAP |" in (tmp_path / "report" / "results.md").read_text()

    capsys.readouterr()
    clip = str(root / "2.wav")
    assert main(["predict", str(out / "best.pt"), clip, "--threshold", "0", "-q"]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines()[1:] if r.strip()]
    assert sorted(r.split()[-2] for r in rows) == ["a", "b"]  # every label is >= 0
    assert main(["predict", str(out / "best.pt"), clip, "--threshold", "1", "-q"]) == 0
    assert "(none >= 1)" in capsys.readouterr().out
    assert main(["predict", str(out / "best.pt"), clip, "--threshold", "0", "-q", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "sigmoid" in doc["aggregation"] and {t["label"] for t in doc["predictions"][0]["labels"]} == {"a", "b"}
    assert main(["predict", str(out / "best.pt"), clip, "--threshold", "1.5"]) == 1
    assert "--threshold must be in [0, 1]" in capsys.readouterr().err
