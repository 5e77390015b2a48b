"""The run folder: what a run leaves behind for people and for ``helix report``.

    RUN_DIR/
      config.yaml     resolved TrainConfig
      env.json        versions, device, world size, git commit and source digest, command line
      metrics.jsonl   one record per epoch (train/val/test loss and accuracy, lr, time, tokens/s)
      steps.jsonl     training loss every ``log_every_steps`` optimizer steps
      summary.json    final / best-validation / best-test (paper protocol) accuracies
      tb/             TensorBoard events
      last.pt         latest checkpoint (resumable), best.pt  best validation accuracy
      .helix-run.lock held (flock) by the run writing the folder

Only rank 0 writes. On resume, records past the checkpoint are dropped so the files read as one
uninterrupted run. A run holds an exclusive lock on the folder for its whole life, so a second run
into the same folder stops at once instead of interleaving its logs; the kernel drops the lock when
the process ends, however it ends, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch


try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are then not protected from each other
    fcntl = None

LOCK_NAME = ".helix-run.lock"


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut by a kill; everything after it is suspect too
    return out


def _truncate_jsonl(path: Path, key: str, keep_up_to: int) -> None:
    """Keep records with ``record[key] <= keep_up_to`` (rewritten atomically)."""
    if not path.is_file():
        return
    kept = [r for r in read_jsonl(path) if r.get(key, -1) <= keep_up_to]
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, path)


def git_commit() -> str | None:
    """Commit of the helix source tree (with ``-dirty`` if it has local changes), or None."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        if not sha:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


SOURCE_ROOT = Path(__file__).resolve().parents[1]
"""The folder of the helix package this process runs (``src/helix`` of a checkout, ``site-packages/helix``
of an installed wheel)."""
SOURCE_SUFFIXES = (".py", ".yaml")
"""The files :func:`source_digest` reads: the code and the presets shipped as package data."""


def tree_digest(root: str | os.PathLike, suffixes: tuple[str, ...] = SOURCE_SUFFIXES) -> str:
    r"""sha256 over the ``suffixes`` files under ``root``: of the lines ``<file's sha256>  <path
    relative to root>``, in path order. In ``root``, ``find . -type f \( -name '*.py' -o -name '*.yaml'
    \) -printf '%P\n' | LC_ALL=C sort | xargs sha256sum | sha256sum`` prints the same digest, so a
    machine without Python can check it too. Bytecode caches and other files do not count."""
    root = Path(root)
    files = sorted((path.relative_to(root).as_posix(), path) for path in root.rglob("*")
                   if path.suffix in suffixes and path.is_file())
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {name}\n".encode())
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """:func:`tree_digest` of the helix package this process runs (:data:`SOURCE_ROOT`). It names the
    code where :func:`git_commit` cannot: a tree copied onto another machine next to an older .git
    (the commit then names code that did not run), or a wheel installed without git at all (same
    files, same digest as the checkout it was built from). Read once per process: 5-20 ms for the
    package's ~1 MB of source on a 2-core VM."""
    return tree_digest(SOURCE_ROOT)


def environment(device: torch.device, world_size: int, precision: str, overrides: list[str] = ()) -> dict:
    """What a run ran on; ``overrides``: the HELIX_OVERRIDES items applied on top of the command line."""
    import numpy

    from helix.version import __version__

    env = {
        "helix_version": __version__,
        "git_commit": git_commit(),
        "source_sha256": source_digest(),  # the package's files as they ran (git can be stale or absent)
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "device": str(device),
        "precision": precision,
        "world_size": world_size,
        "cpu_threads": torch.get_num_threads(),
        "command": sys.argv,
        # the HELIX_OVERRIDES items applied on top of the command line (their values are in config.yaml)
        "helix_overrides": list(overrides),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if device.type == "cuda":
        env.update(cuda=torch.version.cuda, gpu=torch.cuda.get_device_name(device),
                   gpu_count=torch.cuda.device_count())
    return env


class RunFolderBusyError(ValueError):
    """Another live process holds the run folder's lock."""


class RunFolderLock:
    """Exclusive ``flock`` on ``RUN_DIR/.helix-run.lock`` while a run writes the folder.

    ``acquire`` creates the folder if needed, takes the lock without waiting (a busy folder raises
    :class:`RunFolderBusyError` naming the holder's pid), and then removes temporary files (``*.tmp``)
    that a killed run left behind: with the lock held, no live writer can own them. The lock file
    itself stays (removing it would let a third process lock a fresh file while the second still
    holds the old one)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.fd: int | None = None

    def acquire(self) -> "RunFolderLock":
        check_run_folder(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RunFolderBusyError(
                    f"{self.folder} is in use by another helix run ({holder}); wait for it to finish or "
                    f"choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self.fd = fd
        remove_stale_temp_files(self.folder)
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None

    def __enter__(self) -> "RunFolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_run_folder(folder: str | os.PathLike, flag: str = "--out") -> Path:
    """Refuse a run or output folder that is an existing file (one line naming it)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{flag} {folder} is an existing file, not a folder; give a folder path")
    return folder


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete ``*.tmp`` files directly in ``folder`` (left by a killed write); call with the lock held."""
    removed = []
    for entry in folder.iterdir():
        if entry.name.endswith(".tmp") and entry.is_file() and not entry.is_symlink():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


TB_CLOSE_TIMEOUT = 10.0  # seconds RunLogger.close waits for TensorBoard's writer thread


class RunLogger:
    """Writes the run folder (a no-op on ranks other than 0)."""

    def __init__(self, out_dir: str | os.PathLike, enabled: bool, resume_step: int | None = None,
                 resume_epoch: int | None = None):
        self.dir = Path(out_dir)
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            _truncate_jsonl(self.dir / "metrics.jsonl", "epoch", resume_epoch)
            _truncate_jsonl(self.dir / "steps.jsonl", "step", resume_step)
        else:
            for name in ("metrics.jsonl", "steps.jsonl", "summary.json"):
                (self.dir / name).unlink(missing_ok=True)
        self._resume_step = resume_step

    @property
    def tb(self):
        if self._tb is None and self.enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is a dependency, but a broken install should not stop training
                self._tb = False
                return None
            # purge_step drops events a killed run wrote after its last checkpoint
            self._tb = SummaryWriter(str(self.dir / "tb"), purge_step=self._resume_step)
        return self._tb or None

    def write_config(self, cfg) -> None:
        """``cfg``: the resolved run config (anything with ``to_yaml()``)."""
        if self.enabled:
            (self.dir / "config.yaml").write_text(cfg.to_yaml())

    def write_env(self, env: dict) -> None:
        if self.enabled:
            (self.dir / "env.json").write_text(json.dumps(env, indent=2) + "\n")

    def _append(self, name: str, record: dict) -> None:
        with open(self.dir / name, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def log_step(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        self._append("steps.jsonl", {"step": step, **values})
        if self.tb:
            for k, v in values.items():
                self.tb.add_scalar(f"step/{k}", v, step)

    def log_epoch(self, record: dict) -> None:
        if not self.enabled:
            return
        self._append("metrics.jsonl", record)
        if self.tb:
            for k, v in record.items():
                if k not in ("epoch", "step") and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"epoch/{k}", v, record["epoch"])
            self.tb.flush()

    def log_event(self, record: dict) -> None:
        """A non-metric event (e.g. a stopped run) in ``events.jsonl``."""
        if self.enabled:
            self._append("events.jsonl", {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **record})

    def write_summary(self, summary: dict) -> None:
        if self.enabled:
            (self.dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    def close(self, timeout: float = TB_CLOSE_TIMEOUT) -> None:
        """Close TensorBoard's writer, waiting at most ``timeout`` seconds for its thread. Once, after a Ctrl-C,
        a run's exit joined that thread while it still waited on its queue, for more than a minute
        (tests/training/test_runfolder.py). The thread is a daemon, so the process still exits; the jsonl
        logs hold every figure the events would have, and ``events.jsonl`` records the timeout."""
        if not self._tb:
            return
        tb, self._tb = self._tb, False
        closer = threading.Thread(target=tb.close, name="helix-tb-close", daemon=True)
        closer.start()
        closer.join(timeout)
        if closer.is_alive():
            self.log_event({"event": "tensorboard_close_timeout", "seconds": timeout})
