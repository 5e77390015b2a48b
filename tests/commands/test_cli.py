"""The ``helix`` front door: every subcommand's --help is plain text with a description, and a
user's mistake ends with one line ``helix: error: ...`` (exit 1), never a traceback."""

from __future__ import annotations

import argparse
import errno
import json
import os
from pathlib import Path

import pytest
import yaml

from helix.cli import build_parser, main
from helix.core.rundir import RunFolderLock

TINY = ["data.name=synthetic_order", "data.clip_seconds=0.25", "data.num_workers=0",
        "data.task_kwargs={num_train: 16, num_val: 8, num_test: 8}", "model.num_layers=2",
        "model.overrides={d_model: 32, d_state: 4}", "optim.batch_size=8", "device=cpu"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _subparsers(parser: argparse.ArgumentParser, path=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), sub, helps.get(name)
                yield from _subparsers(sub, (*path, name))


def test_every_subcommand_has_plain_help_with_a_description():
    parser = build_parser()
    commands = list(_subparsers(parser))
    assert {"train", "grid", "demo", "report", "models", "params", "bench", "predict", "data"} <= \
        {c[0][0] for c in commands}
    for path, sub, help_line in commands:
        text = sub.format_help()
        assert help_line and help_line.strip(), f"helix {' '.join(path)} has no one-line help"
        assert sub.description and sub.description.strip(), f"helix {' '.join(path)} has no description"
        assert "``" not in text and ":func:" not in text and ":class:" not in text, (path, text)
        undocumented = [a.dest for a in sub._actions if not a.help and a.dest != "help"
                        and not isinstance(a, argparse._SubParsersAction)]
        assert not undocumented, (path, undocumented)


def _read_only_out(tmp_path: Path) -> Path:
    if os.geteuid() == 0:  # root writes through permission bits; /sys refuses new folders even to root
        return Path("/sys/helix-test-run")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    return folder / "run"


@pytest.mark.parametrize("case", ["lr_nan", "clip_nan", "clip_inf", "yaml", "typo", "type", "read_only", "file"])
def test_user_errors_are_one_line(case, capsys, tmp_path):
    out = tmp_path / "run"
    bad = tmp_path / "bad.yaml"
    args = {
        "lr_nan": ["--config", "demo", "lr=nan"],
        "clip_nan": ["--config", "demo", "clip_seconds=nan"],
        "clip_inf": ["--config", "demo", "data.clip_seconds=.inf"],
        "yaml": ["--config", str(bad)],
        "typo": ["--config", "demo", "optim.learning_rate=0.1"],
        "type": ["--config", "demo", "optim.epochs=[1, 2]"],
        "read_only": ["--config", "demo", "--out", str(_read_only_out(tmp_path)), *TINY],
        "file": ["--config", "demo", "--out", str(bad), *TINY],
    }[case]
    bad.write_text("optim:\n  lr: 0.1\n  epochs: [1\n")
    expected = {
        "lr_nan": "optim.lr must be a finite number, got nan",
        "clip_nan": "data.clip_seconds must be a finite number, got nan",
        "clip_inf": "data.clip_seconds must be a finite number, got inf",
        "yaml": f"{bad}:4: malformed YAML",
        "typo": "unknown config key 'optim.learning_rate'; did you mean optim.",
        "type": "optim.epochs: expected int, got [1, 2]",
        "read_only": "not writable: choose another --out",
        "file": f"--out {bad} is an existing file, not a folder",
    }[case]
    assert main(["train", *args, "--epochs", "1"] if case not in ("read_only", "file") else ["train", *args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("helix: error: ") and expected in err[0], err
    assert not out.exists()


def test_a_full_disk_is_one_line_and_leaves_no_lock_or_temporary_file(capsys, tmp_path, monkeypatch):
    import helix.training.loop as loop

    def no_space(path, payload):  # the one write this test fakes: a disk cannot be filled on demand
        Path(path).with_name(f".{Path(path).name}.123.tmp").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(loop, "save_checkpoint", no_space)
    out = tmp_path / "run"
    assert main(["train", "--config", "demo", "--epochs", "1", "--out", str(out), *TINY]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"helix: error: {out / 'best.pt'}: no space left on device "
                   "(the disk is full: free space or choose another --out)"]
    with RunFolderLock(out):  # released, and the next start clears the partial file
        assert not list(out.glob(".*.tmp"))


def test_helix_overrides_shrink_a_documented_command(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HELIX_OVERRIDES", " ".join(["optim.epochs=1", *TINY[:3], "'data.task_kwargs={num_train: 16, "
                                                    "num_val: 8, num_test: 8}'", "model.num_layers=2", "optim.batch_size=8"]))
    out = tmp_path / "run"
    assert main(["train", "--config", "demo", "--model", "pure_mamba_raw", "--out", str(out)]) == 0
    assert "HELIX_OVERRIDES: optim.epochs=1 data.name=synthetic_order" in capsys.readouterr().out
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["optim"]["epochs"] == 1 and cfg["data"]["task_kwargs"]["num_train"] == 16
    assert cfg["model"]["name"] == "pure_mamba_raw" and cfg["model"]["num_layers"] == 2
    env = json.loads((out / "env.json").read_text())
    assert env["helix_overrides"][0] == "optim.epochs=1"
    assert json.loads((out / "summary.json").read_text())["epochs_completed"] == 1


def test_help_imports_no_heavy_module():
    """`helix --help` builds every subcommand's parser without torch, numpy or soundfile (commands
    import them inside their run functions), so it answers in a fraction of a second."""
    import subprocess
    import sys

    code = ("import sys, helix.cli; helix.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'numpy', 'soundfile', 'tqdm', 'triton') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
