"""--resume continues a run killed with SIGKILL exactly: a real `helix train` subprocess is killed
mid-epoch, resumed, and must log the same per-step losses, epoch metrics and final weights as a
run that was never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helix.models.checkpoint import load_checkpoint
from helix.core.rundir import read_jsonl

from .conftest import TINY

# one thread: the three processes must do bit-identical arithmetic
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SETTINGS = TINY + ["optim.epochs=4", "checkpoint_every_steps=2"]
METRIC_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr", "step")


def _command(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "helix.cli", "train", "--config", str(config), "--out", str(out), *extra]


def _write_config(tmp_path: Path) -> Path:
    from helix.training.config_io import load_config

    path = tmp_path / "tiny.yaml"
    path.write_text(load_config(None, SETTINGS).to_yaml())
    return path


@pytest.mark.slow  # started first (tests/conftest.py)
def test_sigkill_then_resume_reproduces_the_uninterrupted_run(tmp_path):
    config = _write_config(tmp_path)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(_command(config, whole), env=ENV, check=True, capture_output=True, timeout=300)

    proc = subprocess.Popen(_command(config, killed), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    # kill once step 9 is logged: the newest checkpoint is then step 8, mid-epoch 2 (6 steps/epoch)
    while len(read_jsonl(killed / "steps.jsonl")) < 9:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "the run never reached step 9"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "summary.json").exists()
    ck = load_checkpoint(killed / "last.pt")
    assert ck["step"] < 24, "the run finished before it was killed"

    # resume without --config: the run folder's config.yaml is used
    subprocess.run([sys.executable, "-m", "helix.cli", "train", "--out", str(killed), "--resume"], env=ENV,
                   check=True, capture_output=True, timeout=300)

    steps = [read_jsonl(d / "steps.jsonl") for d in (whole, killed)]
    assert [s["step"] for s in steps[1]] == list(range(1, 25))
    assert [(s["loss"], s["grad_norm"]) for s in steps[0]] == [(s["loss"], s["grad_norm"]) for s in steps[1]]
    epochs = [read_jsonl(d / "metrics.jsonl") for d in (whole, killed)]
    assert [[r[k] for k in METRIC_KEYS] for r in epochs[0]] == [[r[k] for k in METRIC_KEYS] for r in epochs[1]]
    a, b = (load_checkpoint(d / "last.pt")["model_state"] for d in (whole, killed))
    assert all(torch.equal(a[k], b[k]) for k in a)
