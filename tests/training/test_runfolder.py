"""The run folder is locked while a run writes it, and what a killed run left is cleaned up.

A real ``helix train`` process holds the lock; a second one into the same folder stops at once with
one line and changes nothing; Ctrl-C ends the first with exit status 130 and one line. (That a
SIGKILLed run leaves no stale lock is what ``test_resume.py`` shows: its resume takes the lock.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helix.training.loop import Trainer
from helix.core.rundir import LOCK_NAME, RunFolderBusyError, RunFolderLock, read_jsonl

from .conftest import TINY

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _train(config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "helix.cli", "train", "--config", str(config), "--out", str(out)]


def test_second_run_into_a_busy_folder_stops_at_once_and_ctrl_c_is_one_line(tmp_path):
    from helix.training.config_io import load_config

    config = tmp_path / "long.yaml"
    # far more epochs than the test lasts (a TINY epoch takes ~0.1 s): with 500 the first run could reach
    # its own end, and a Ctrl-C during the interpreter's shutdown is ignored (exit status 0)
    config.write_text(load_config(None, TINY + ["optim.epochs=100000"]).to_yaml())
    out = tmp_path / "run"
    # preexec_fn: SIGINT as a terminal gives it; a background job (``make test &``) hands its children
    # SIGINT ignored, and Ctrl-C could not be tested
    # PYTHONFAULTHANDLER: if the run ever fails to stop, SIGABRT makes it print every thread's stack. Twice, in
    # a fresh clone's `make test` on the 2-core machine, it did not exit within 60 s of Ctrl-C: the second
    # time the stacks showed the run's exit joining TensorBoard's writer thread, itself still waiting on its
    # queue (a wake-up lost to the Ctrl-C, most likely); RunLogger.close now waits at most 10 s for it
    # (tests/core/test_rundir_logger.py)
    first = subprocess.Popen(_train(config, out), env={**ENV, "PYTHONFAULTHANDLER": "1"}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 120
        while len(read_jsonl(out / "steps.jsonl")) < 2:
            assert first.poll() is None, first.stderr.read()
            assert time.time() < deadline, "the first run never started training"
            time.sleep(0.05)
        second = subprocess.run(_train(config, out), env=ENV, capture_output=True, text=True, timeout=120)
        assert second.returncode == 1
        assert second.stderr.strip().splitlines() == [
            f"helix: error: {out} is in use by another helix run (pid {first.pid} on {os.uname().nodename}); "
            f"wait for it to finish or choose another --out"]
        assert first.poll() is None  # the first run never noticed
        first.send_signal(signal.SIGINT)
        try:
            status = first.wait(timeout=60)
        except subprocess.TimeoutExpired:
            first.send_signal(signal.SIGABRT)
            _, err = first.communicate(timeout=30)
            pytest.fail("the run did not stop within 60 s of Ctrl-C; its threads:\n" + err[-6000:])
        assert status == 130
        err = first.stderr.read()
        assert "Traceback" not in err and err.strip().splitlines()[-1] == "helix: interrupted"
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    with RunFolderLock(out):  # released with the process
        pass
    steps = [r["step"] for r in read_jsonl(out / "steps.jsonl")]
    assert steps == list(range(1, len(steps) + 1))  # one writer, no interleaving


def test_trainer_refuses_a_locked_folder_and_touches_nothing(tiny):
    cfg = tiny()
    out = Path(cfg.out_dir)
    with RunFolderLock(out):
        with pytest.raises(RunFolderBusyError, match=f"pid {os.getpid()}"):
            Trainer(cfg, verbose=False).fit()
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    Trainer(cfg, verbose=False).fit()  # the lock is free again, and the run releases its own
    with RunFolderLock(out):
        pass


def test_start_removes_temporary_files_a_killed_run_left(tiny):
    cfg = tiny("optim.epochs=1")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True)
    stale = [out / ".last.pt.x1y2.tmp", out / "metrics.jsonl.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    keep = out / "notes.txt"
    keep.write_text("mine")
    Trainer(cfg, verbose=False).fit()
    assert not any(p.exists() for p in stale) and keep.read_text() == "mine"
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def test_out_that_is_a_file_is_refused(tiny, tmp_path):
    path = tmp_path / "afile"
    path.write_text("x")
    with pytest.raises(ValueError, match=f"--out {path} is an existing file, not a folder"):
        Trainer(tiny(f"out_dir={path}"), verbose=False).fit()
    assert path.read_text() == "x"


def test_ctrl_c_during_a_checkpoint_write_finishes_it_and_ends_as_interrupted(tmp_path, monkeypatch, capsys,
                                                                               terminal_sigint):
    """A SIGINT that lands while ``torch.save`` writes used to surface as its error ("unexpected
    pos ...", exit 1) with the file dropped; now the checkpoint is written whole and the run ends as
    interrupted (exit 130, one line)."""
    import helix.training.loop as loop
    from helix.cli import main
    from helix.models.checkpoint import load_checkpoint
    from helix.training.config_io import load_config

    real_save = loop.save_checkpoint
    saved = []

    def save_hit_by_ctrl_c(path, payload, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while this checkpoint is being written
        time.sleep(0.2)
        saved.append(real_save(path, payload, *args, **kwargs))
        return saved[-1]

    monkeypatch.setattr(loop, "save_checkpoint", save_hit_by_ctrl_c)
    config = tmp_path / "tiny.yaml"
    config.write_text(load_config(None, TINY).to_yaml())
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out)]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "helix: interrupted"
    assert len(saved) == 1 and load_checkpoint(saved[0])["model"]  # written whole, loads safely
    assert not list(out.glob(".*.tmp"))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the command put it back
