"""Data-parallel training: `torchrun --nproc_per_node 2` on CPU (gloo) with the same config file as
a single process must give the same per-step losses, metrics and weights (same global batch of 8;
augmentation off, because its random draws are per rank)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helix.models.checkpoint import load_checkpoint
from helix.core.rundir import read_jsonl

from .conftest import TINY

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# odd evaluation sizes: the two ranks' shards differ in length and must still sum exactly
SETTINGS = TINY + ["augment.enabled=false", "data.task_kwargs={num_train: 48, num_val: 15, num_test: 23}",
                   "eval_batch_size=4"]


def _train(args: list[str], out: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([*args, "-m", "helix.cli", "train", "--config", str(out.parent / "cfg.yaml"),
                           "--out", str(out)], env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_two_gloo_processes_match_one_process(tmp_path):
    from helix.training.config_io import load_config

    (tmp_path / "cfg.yaml").write_text(load_config(None, SETTINGS).to_yaml())
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _train([sys.executable], single)
    _train([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"], ddp)

    env = json.loads((ddp / "env.json").read_text())
    assert env["world_size"] == 2
    a, b = (read_jsonl(d / "steps.jsonl") for d in (single, ddp))
    assert len(a) == len(b) == 12
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], rel=1e-4)
    assert [r["grad_norm"] for r in a] == pytest.approx([r["grad_norm"] for r in b], rel=1e-3)
    ma, mb = (read_jsonl(d / "metrics.jsonl") for d in (single, ddp))
    for ra, rb in zip(ma, mb):
        # equal mean losses: every validation/test example was counted exactly once over the ranks
        for key in ("train_loss", "val_loss", "test_loss"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-4), key
        assert abs(ra["test_acc"] - rb["test_acc"]) <= 1 / 23 and abs(ra["val_acc"] - rb["val_acc"]) <= 1 / 15
    wa, wb = (load_checkpoint(d / "last.pt")["model_state"] for d in (single, ddp))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=2e-4)
    assert len(mb) == 2  # only rank 0 logs
