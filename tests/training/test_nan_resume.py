"""After a NaN stop, the command the message prints continues the run with a lower learning rate.

The first run meets NaN inputs from step 7 on (a dataset wrapper, as in ``test_loop.py``); the
printed command is then run verbatim as a real ``helix train`` process on the clean data."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from helix.cli import main
from helix.models.checkpoint import load_checkpoint
from helix.training.loaders import build_run_data
from helix.training.loop import NonFiniteLossError, Trainer
from helix.core.rundir import read_jsonl
from helix.training.schedule import cosine_lr


class _PoisonAfter(torch.utils.data.Dataset):
    def __init__(self, base, after):
        self.base, self.after, self.reads = base, after, 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        wave, label = self.base[i]
        self.reads += 1
        return (torch.full_like(wave, math.nan) if self.reads > self.after else wave), label


def _stop_with_nan(cfg) -> str:
    data = build_run_data(cfg.data)
    data.train = _PoisonAfter(data.train, after=48)  # epoch 1 (6 steps of 8) is clean
    with pytest.raises(NonFiniteLossError) as err:
        Trainer(cfg, data=data, verbose=False).fit()
    return str(err.value)


def test_nan_message_prints_a_command_that_resumes_with_a_lower_lr(tiny, capsys):
    cfg = tiny("optim.epochs=3")
    out = Path(cfg.out_dir)
    message = _stop_with_nan(cfg)
    command = re.search(r"To continue with a 10x lower learning rate: (helix train .*?) \(", message).group(1)
    assert command == f"helix train --out {shlex.quote(str(out))} --resume --allow-changes optim.lr optim.lr=0.0003"

    # a plain --resume with the lower rate is refused, and says which flag allows it
    argv = shlex.split(command)
    plain = [a for a in argv if a not in ("--allow-changes", "optim.lr")]
    assert main(plain[1:]) == 1
    assert "to change them on purpose add --allow-changes optim.lr" in capsys.readouterr().err

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "helix.cli", *argv[1:]], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resumed with changed settings: optim.lr: 0.003 -> 0.0003" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_completed"] == 3
    assert yaml.safe_load((out / "config.yaml").read_text())["optim"]["lr"] == 0.0003
    events = read_jsonl(out / "events.jsonl")
    assert [e["event"] for e in events] == ["non_finite_loss", "resumed_with_changes"]
    assert events[1]["step"] == 6 and events[1]["changes"] == ["optim.lr: 0.003 -> 0.0003"]
    # from step 7 on the lr follows the new cosine (peak 3e-4), steps 1-6 were on the old one (3e-3)
    history = read_jsonl(out / "metrics.jsonl")
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[1]["lr"] == pytest.approx(cosine_lr(12, 18, 0, 3e-4, cfg.optim.min_lr))  # after 12 steps
    steps = read_jsonl(out / "steps.jsonl")
    assert steps[6]["step"] == 7 and steps[6]["lr"] == pytest.approx(cosine_lr(6, 18, 0, 3e-4, cfg.optim.min_lr))
    assert steps[5]["lr"] == pytest.approx(cosine_lr(5, 18, 0, 3e-3, cfg.optim.min_lr))
    assert all(torch.isfinite(v).all() for v in load_checkpoint(out / "last.pt")["model_state"].values())


def test_allow_changes_applies_betas_and_weight_decay_and_refuses_other_keys(tiny):
    cfg = tiny("optim.epochs=2")
    _stop_with_nan(cfg)
    with pytest.raises(ValueError, match="--allow-changes takes optim.lr, .*got 'model.name'"):
        Trainer(cfg, resume=True, allow_changes=("model.name",))
    changed = tiny("optim.epochs=2", "optim.betas=[0.8, 0.99]", "optim.weight_decay=0.1", "optim.min_lr=0")
    with pytest.raises(ValueError, match=r"to change them on purpose add --allow-changes optim.betas"):
        Trainer(changed, resume=True, verbose=False).fit()
    trainer = Trainer(changed, resume=True, verbose=False, allow_changes=("betas", "weight_decay", "min_lr"))
    trainer.fit()
    groups = trainer.optimizer.param_groups
    assert all(g["betas"] == (0.8, 0.99) for g in groups)
    assert sorted(g["weight_decay"] for g in groups) == [0.0, 0.1]
    assert groups[0]["lr"] == pytest.approx(cosine_lr(12, 12, 0, 3e-3, 0.0))
