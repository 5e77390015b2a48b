"""`helix probe`: a real process from an empty folder with relative paths; outputs never over inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from helix.cli import main
from helix.data.recipes import get_recipe
from helix.inference.probe import load_probe
from helix.models import create_model
from helix.models.checkpoint import save_checkpoint

SR = 16000
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """``ckpt/frozen.pt`` and a prepared two-tone CSV corpus ``data/`` under one folder."""
    top = tmp_path_factory.mktemp("probe_cli")
    torch.manual_seed(0)
    kwargs = {"d_model": 16, "d_state": 4, "pattern": "MA", "n_heads": 2}
    model = create_model("helix_mel", 3, **kwargs)
    (top / "ckpt").mkdir()
    save_checkpoint(top / "ckpt" / "frozen.pt", {
        "model": {"name": "helix_mel", "kwargs": kwargs, "num_classes": 3}, "class_names": ["x", "y", "z"],
        "sample_rate": SR, "clip_seconds": 0.5, "model_state": model.state_dict()})
    lines = ["path,label,split"]
    rng = np.random.default_rng(0)
    t = np.arange(SR // 2) / SR
    for label, freq in (("low", 300.0), ("high", 2400.0)):
        for i, split in enumerate(("train",) * 8 + ("validation",) * 4 + ("test",) * 4):
            wave = 0.3 * np.sin(2 * np.pi * freq * (1 + 0.03 * rng.standard_normal()) * t)
            (top / "data" / label).mkdir(parents=True, exist_ok=True)
            sf.write(top / "data" / label / f"{i}.wav", (wave + 0.01 * rng.standard_normal(len(t))).astype(np.float32), SR)
            lines.append(f"{label}/{i}.wav,{label},{split}")
    (top / "data" / "labels.csv").write_text("\n".join(lines) + "\n")
    get_recipe("csv").prepare(top / "data", progress=False, workers=1, csv=str(top / "data" / "labels.csv"))
    return top


def test_probe_process_from_an_empty_folder(session):
    cwd = session / "empty"
    cwd.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "helix.cli", "probe", "../ckpt/frozen.pt", "--data-root", "../data",
                           "-o", "out/probe", "--grid", "0.1,10", "-q"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "C=" in proc.stdout and "test" in proc.stdout and "accuracy" in proc.stdout
    doc = json.loads((cwd / "out" / "probe" / "probe.json").read_text())
    assert doc["checkpoint"] == "../ckpt/frozen.pt" and doc["C"] in (0.1, 10.0)
    assert doc["test"]["value"] >= 0.9 and doc["failures"] == [] and doc["clips"]["test"] == 8
    probe = load_probe(cwd / "out" / "probe" / "probe.safetensors")
    assert probe.class_names == ["high", "low"] and probe.weight.shape == (2, doc["embedding_dim"])
    assert sorted(os.listdir(cwd)) == ["out"]  # nothing else written where it ran


def test_outputs_over_inputs_and_bad_options_are_refused(session, capsys):
    ckpt, data = str(session / "ckpt" / "frozen.pt"), str(session / "data")
    before = (session / "ckpt" / "frozen.pt").read_bytes()
    cases = [
        (["probe", ckpt, "--data-root", data, "-o", ckpt], "it is the input"),
        (["probe", ckpt, "--data-root", data, "-o", data], "it is the input"),
        (["probe", ckpt, "--data-root", data, "-o", str(session / "o"), "--fold", "2"], "not folds"),
        (["probe", ckpt, "--data-root", str(session / "ckpt"), "-o", str(session / "o")], "is not prepared"),
        (["probe", ckpt, "-o", str(session / "o")], "give --data-root"),
        (["probe", ckpt, "--data-root", data, "-o", str(session / "o"), "--grid", "1,-2"], "--grid expects"),
    ]
    for argv, message in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("helix: error:") and message in err and "Traceback" not in err, (argv, err)
    assert (session / "ckpt" / "frozen.pt").read_bytes() == before
    assert not (session / "o").exists()


def test_a_bad_clip_is_named_counted_and_skipped(session, tmp_path, capsys):
    import shutil

    data = shutil.copytree(session / "data", tmp_path / "data")
    (data / "low" / "3.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio")
    out = tmp_path / "probe"
    assert main(["probe", str(session / "ckpt" / "frozen.pt"), "--data-root", str(data), "-o", str(out),
                 "--grid", "1", "-q"]) == 1  # written, but the skipped clip makes the status 1
    err = capsys.readouterr().err
    assert "1 of 32 input(s) failed" in err and "low/3.wav" in err
    doc = json.loads((out / "probe.json").read_text())
    assert doc["clips"]["train"] == 15 and doc["failures"][0]["file"].endswith("low/3.wav")
