"""``helix predict / embed / verify`` end to end: real files, output formats, failures and exit status."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from helix.cli import main
from helix.models import create_model
from helix.models.checkpoint import save_checkpoint

SR = 16000
CLASSES = ["dog", "rain", "siren"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    kwargs = {"d_model": 16, "d_state": 8, "pattern": "MA", "n_heads": 2}
    model = create_model("helix_raw", 3, **kwargs)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint(path, {"model": {"name": "helix_raw", "kwargs": kwargs, "num_classes": 3},
                           "class_names": CLASSES, "sample_rate": SR, "clip_seconds": 0.5,
                           "model_state": model.state_dict()})
    return str(path)


@pytest.fixture()
def folder(tmp_path):
    """Two good files, a silent one, and four bad ones (all with audio extensions)."""
    d = tmp_path / "audio"
    (d / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    sf.write(d / "a.wav", 0.1 * rng.standard_normal(20000).astype(np.float32), SR)
    sf.write(d / "sub" / "b.flac", 0.1 * rng.standard_normal((30000, 2)).astype(np.float32), 22050)
    sf.write(d / "quiet.wav", np.zeros(9000, np.float32), SR)
    data = (d / "a.wav").read_bytes()
    (d / "cut.wav").write_bytes(data[:3000])
    (d / "empty.ogg").write_bytes(b"")
    (d / "notes.wav").write_text("not audio at all\n" * 30)
    (d / "readme.txt").write_text("ignored: not an audio extension")
    return d


BAD = ("cut.wav", "empty.ogg", "notes.wav")


def test_folder_table_lists_failures_and_exits_1(ckpt, folder, capsys):
    assert main(["predict", ckpt, str(folder), "--top-k", "2", "-q"]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["file", "seconds", "rank", "label", "prob"]
    for name in ("a.wav", "b.flac", "quiet.wav"):
        assert sum(name in line for line in lines) == 1  # one row per file, plus a rank-2 row
    assert len(lines) == 1 + 3 * 2
    assert "3 of 6 input(s) failed" in err
    for name in BAD:
        assert name in err
    assert "truncated" in err and "empty file" in err and "warning:" in err and "quiet.wav" in err
    assert "readme.txt" not in out + err


def test_json_and_csv_outputs(ckpt, folder, tmp_path, capsys):
    good = [str(folder / "a.wav"), str(folder / "sub" / "b.flac")]
    assert main(["predict", ckpt, *good, "--format", "json", "--timeline", "--top-k", "3",
                 "-o", str(tmp_path / "p.json")]) == 0
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["window_seconds"] == 0.5 and doc["hop_seconds"] == 0.25 and doc["failures"] == []
    first = doc["predictions"][0]
    assert first["file"] == good[0] and first["windows"] == 4 and len(first["timeline"]) == 4
    assert sum(t["prob"] for t in first["top"]) == pytest.approx(1.0, abs=1e-4)
    assert {t["label"] for t in first["top"]} == set(CLASSES)
    capsys.readouterr()
    assert main(["predict", ckpt, good[0], str(folder / "notes.wav"), "--format", "csv", "--hop", "0.5",
                 "--timeline", "--top-k", "1"]) == 1
    out, err = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out)))
    # 1.25 s: windows at 0 and 0.5 s, then one aligned to the end, 0.75-1.25 s
    assert [r["scope"] for r in rows] == ["file", "window", "window", "window"]
    assert rows[3]["start"] == "0.7500" and rows[3]["end"] == "1.2500"
    assert "notes.wav" in err


def test_bad_checkpoint_and_arguments(folder, tmp_path, capsys):
    (tmp_path / "bad.pt").write_bytes(b"\x00" * 100)
    assert main(["predict", str(tmp_path / "bad.pt"), str(folder / "a.wav")]) == 1
    assert "bad.pt" in capsys.readouterr().err
    ckpt_missing = str(tmp_path / "missing.pt")
    assert main(["predict", ckpt_missing, str(folder)]) == 1
    assert "checkpoint not found" in capsys.readouterr().err


def test_bad_window_and_empty_folder(ckpt, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["predict", ckpt, str(tmp_path / "empty")]) == 1
    assert "no audio files" in capsys.readouterr().err
    assert main(["predict", ckpt, str(tmp_path), "--hop", "0"]) == 1
    assert "hop must be a positive number" in capsys.readouterr().err


def test_embed_cli_npy_and_json(ckpt, folder, tmp_path, capsys):
    assert main(["embed", ckpt, str(folder), "-o", str(tmp_path / "emb"), "-q"]) == 1  # bad files listed
    index = json.loads((tmp_path / "emb" / "index.json").read_text())
    assert len(index["files"]) == 3 and len(index["failures"]) == 3
    assert np.load(tmp_path / "emb" / index["files"][0]["npy"]).shape == (16,)
    capsys.readouterr()
    assert main(["embed", ckpt, str(folder / "a.wav"), "--per-window", "-o", str(tmp_path / "e.json")]) == 0
    doc = json.loads((tmp_path / "e.json").read_text())
    assert doc["dim"] == 16 and len(doc["embeddings"][0]["windows"]) == 4


def test_verify_cli(ckpt, folder, tmp_path, capsys):
    (folder / "trials.txt").write_text("1 a.wav a.wav\n0 a.wav sub/b.flac\n1 sub/b.flac sub/b.flac\n"
                                       "0 sub/b.flac quiet.wav\n")
    assert main(["verify", ckpt, str(folder / "trials.txt"), "--json", "--scores", str(tmp_path / "s.txt"),
                 "-q"]) == 0
    out, err = capsys.readouterr()
    metrics = json.loads(out)
    assert metrics["trials"] == 4 and metrics["p_target"] == 0.01 and 0 <= metrics["eer"] <= 1
    scores = (tmp_path / "s.txt").read_text().splitlines()
    assert len(scores) == 4 and float(scores[0].split()[0]) == pytest.approx(1.0, abs=1e-5)
    (folder / "trials2.txt").write_text("1 a.wav a.wav\n0 a.wav notes.wav\n0 a.wav sub/b.flac\n")
    assert main(["verify", ckpt, str(folder / "trials2.txt")]) == 1
    out, err = capsys.readouterr()
    assert "EER" in out and "minDCF" in out and "notes.wav" in err and "1 of 3 trial(s) skipped" in err


# ---------------------------------------------------------------- no command destroys its inputs
def _snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, err)


def test_outputs_that_are_inputs_are_refused_before_anything_is_opened(ckpt, tmp_path, capsys):
    import shutil

    d = tmp_path / "w"
    d.mkdir()
    model = d / "model.pt"
    shutil.copy(ckpt, model)
    sf.write(d / "a.wav", 0.1 * np.random.default_rng(0).standard_normal(8000).astype(np.float32), SR)
    (d / "alias.wav").symlink_to(d / "a.wav")
    (d / "trials.txt").write_text("1 a.wav a.wav\n0 a.wav a.wav\n")
    (d / "out").mkdir()
    before = _snapshot(d)
    cases = [
        (["predict", model, d / "a.wav", "-o", d / "a.wav"], "it is the input"),
        (["predict", model, d / "a.wav", "-o", model], "it is the input"),
        (["predict", model, d, "-o", d / "alias.wav"], "it is the input"),  # via a symlink, found in a folder
        (["predict", model, d / "a.wav", "-o", d / "out"], "is an existing folder"),
        (["embed", model, d / "a.wav", "-o", d / "a.wav"], "it is the input"),
        (["embed", model, d / "a.wav", "-o", model, "--format", "json"], "it is the input"),
        (["verify", model, d / "trials.txt", "--scores", d / "trials.txt"], "it is the input"),
        (["export", model, "--format", "torchscript", "-o", model], "it is the input"),
        (["export", model, "--format", "onnx", "-o", d / "x.pt"], "--format onnx writes .onnx files"),
        (["export", model, "--format", "safetensors", "-o", d / "x.onnx"], "writes .safetensors files"),
        (["export", model, "--format", "torchscript", "-o", d / "out"], "is an existing folder"),
        (["export", model, "--format", "pretrained", "-o", d / "m.safetensors"], "writes a folder"),
    ]
    for argv, message in cases:
        assert main([str(a) for a in argv]) == 1, argv
        _one_line(capsys.readouterr().err, message)
        assert _snapshot(d) == before, argv  # byte-identical, and nothing new written
    assert sorted(p.name for p in d.iterdir()) == ["a.wav", "alias.wav", "model.pt", "out", "trials.txt"]


def test_export_default_name_sits_beside_the_checkpoint(ckpt, tmp_path, capsys):
    import shutil

    model = tmp_path / "best.pt"
    shutil.copy(ckpt, model)
    before = model.read_bytes()
    assert main(["export", str(model), "--format", "safetensors"]) == 0
    assert (tmp_path / "best.safetensors").is_file() and model.read_bytes() == before
    assert "wrote" in capsys.readouterr().out


# ---------------------------------------------------------------- per-file failures
@pytest.fixture()
def hostile(tmp_path):
    """Two good files around a file with one sample at 48 kHz (nothing left at 16 kHz) and a float
    WAV with samples of +-3e38 (finite, but far beyond full scale)."""
    d = tmp_path / "hostile"
    d.mkdir()
    rng = np.random.default_rng(1)
    sf.write(d / "a_good.wav", 0.1 * rng.standard_normal(12000).astype(np.float32), SR)
    sf.write(d / "b_one_sample.wav", np.array([0.5], np.float32), 48000)
    sf.write(d / "c_huge.wav", np.tile(np.array([3e38, -3e38], np.float32), 6000), SR, subtype="FLOAT")
    sf.write(d / "d_good.flac", 0.1 * rng.standard_normal(9000).astype(np.float32), SR)
    return d


def test_empty_after_resampling_and_huge_samples_fail_per_file(ckpt, hostile, tmp_path, capsys):
    assert main(["predict", ckpt, str(hostile), "--format", "json", "-o", str(tmp_path / "p.json"), "-q"]) == 1
    doc = json.loads((tmp_path / "p.json").read_text())
    assert [p["file"].rsplit("/", 1)[1] for p in doc["predictions"]] == ["a_good.wav", "d_good.flac"]
    errors = {f["file"].rsplit("/", 1)[1]: f["error"] for f in doc["failures"]}
    assert "no audio samples" in errors["b_one_sample.wav"]
    assert "far outside [-1, 1]" in errors["c_huge.wav"] and "checkpoint" not in errors["c_huge.wav"]
    err = capsys.readouterr().err
    assert "2 of 4 input(s) failed" in err and "Traceback" not in err
    for name in ("b_one_sample.wav", "c_huge.wav"):
        assert sum(name in line for line in err.splitlines()) == 1  # one line, naming the file
    assert main(["embed", ckpt, str(hostile), "-o", str(tmp_path / "emb"), "-q"]) == 1
    index = json.loads((tmp_path / "emb" / "index.json").read_text())
    assert len(index["files"]) == 2 and len(index["failures"]) == 2


def test_a_fifo_input_fails_by_name_and_the_rest_complete(ckpt, hostile, tmp_path):
    import os
    import subprocess
    import sys

    os.mkfifo(tmp_path / "pipe.wav")
    proc = subprocess.run([sys.executable, "-m", "helix.cli", "predict", ckpt, str(tmp_path / "pipe.wav"),
                           str(hostile / "a_good.wav"), "--format", "csv", "-q"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "a_good.wav" in proc.stdout
    assert "pipe.wav" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("flags, message", [
    (["--hop", "inf"], "hop must be a positive number of seconds, got inf"),
    (["--hop", "nan"], "hop must be a positive number of seconds, got nan"),
    (["--hop", "-1"], "hop must be a positive number"),
    (["--window", "1e9"], "longer than the 600 s limit"),
    (["--window", "inf"], "window must be a positive number"),
    (["--window", "0"], "window must be a positive number"),
    (["--window", "-2"], "window must be a positive number"),
])
def test_bad_window_and_hop_values_are_one_line(ckpt, hostile, capsys, flags, message):
    for command in ("predict", "embed"):
        extra = ["-o", str(hostile / "e.json")] if command == "embed" else []
        assert main([command, ckpt, str(hostile / "a_good.wav"), *flags, *extra]) == 1
        _one_line(capsys.readouterr().err, message)


def test_predict_into_head_ends_quietly(ckpt, hostile):
    import subprocess
    import sys

    # 400 predictions x 3 rows of ~90 bytes: well past the pipe buffer once `head` has exited
    files = [str(hostile / "a_good.wav")] * 400
    cmd = [sys.executable, "-m", "helix.cli", "predict", ckpt, *files, "--top-k", "3", "--batch-size", "64", "-q"]
    proc = subprocess.run(f"{subprocess.list2cmdline(cmd)} | head -1", shell=True, capture_output=True,
                          text=True, timeout=300, executable="/bin/bash")
    assert proc.stdout.split() == ["file", "seconds", "rank", "label", "prob"]
    assert "BrokenPipeError" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr == ""
