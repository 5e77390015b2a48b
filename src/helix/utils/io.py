"""Atomic writes that never destroy their inputs.

Every file helix writes (checkpoints, predictions, embeddings, exports) goes through
:func:`atomic_path` / :func:`atomic_write`:

1. the output path is checked first: it must not be the same file as any input (compared with
   ``os.path.samefile``, so symlinks and hard links count, else by resolved path) nor an existing
   folder -- before anything is opened, so a refused command leaves every file untouched;
2. the data goes to ``.<name>.<pid>-<random>.tmp`` in the target's folder, created with mode
   ``0o666`` so the umask decides the permissions (``tempfile.mkstemp`` would force ``0600``);
3. on success the temporary file is fsynced and renamed over the target with ``os.replace``
   (atomic on POSIX and Windows), then the folder is fsynced so the rename itself is durable; on
   any error, ``KeyboardInterrupt`` included, the temporary file is removed and the target keeps
   its previous content.

A process killed between 2 and 3 leaves its temporary file behind; the next write to the same
target removes such files when they are older than the current process (:func:`remove_stale_temp_files`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import time
from pathlib import Path
from typing import IO, Iterable, Iterator

PROCESS_START = time.time()
"""When this process imported helix: temporary files older than this belong to an earlier run."""


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` name the same file (through symlinks and hard links, or, when one
    does not exist yet, by resolved path)."""
    with contextlib.suppress(OSError):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def check_output(path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (), *,
                 what: str = "output", folder: bool = False) -> Path:
    """Refuse an output that would overwrite an input, or that has the wrong kind (file vs folder).

    ``folder=True`` means the output is a folder (it may exist; an existing file is refused).
    Raises ValueError with one line naming both paths; touches nothing.
    """
    path = Path(path)
    for inp in inputs:
        if inp is not None and same_file(path, inp):
            raise ValueError(f"refusing to write the {what} to {path}: it is the input {inp}, which would be "
                             "destroyed; choose another output path")
    if folder and path.exists() and not path.is_dir():
        raise ValueError(f"the {what} {path} must be a folder, but a file of that name exists")
    if not folder and path.is_dir():
        raise ValueError(f"the {what} {path} is an existing folder; give a file path")
    return path


def umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    old = os.umask(0o022)
    os.umask(old)
    return old


def temp_name(name: str) -> str:
    """The name of a temporary file for target ``name`` (matched by :func:`remove_stale_temp_files`)."""
    return f".{name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"


def remove_stale_temp_files(folder: str | os.PathLike, name: str | None = None,
                            older_than: float | None = None) -> list[Path]:
    """Delete ``.<name>.*.tmp`` files in ``folder`` (any name when None) last modified before
    ``older_than`` (default: this process's start), i.e. left by a run that was killed mid-write."""
    cutoff = PROCESS_START if older_than is None else older_than
    pattern = f".{glob.escape(name)}.*.tmp" if name is not None else ".*.tmp"
    removed = []
    for p in Path(folder).glob(pattern):
        with contextlib.suppress(OSError):  # gone already, or not ours to delete
            if p.is_file() and not p.is_symlink() and p.stat().st_mtime < cutoff:
                p.unlink()
                removed.append(p)
    return removed


def _fsync_path(path: Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if directory:
            return  # some platforms and file systems cannot open folders; the rename is still atomic
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (), *,
                what: str = "output") -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path`` for a writer that wants a file name; on success
    it is fsynced and renamed over ``path`` (see the module docstring)."""
    path = check_output(path, inputs, what=what)
    # write through a symlink to its target instead of replacing the link itself
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(target.parent, target.name)
    tmp = target.parent / temp_name(target.name)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # mode 0o666 & ~umask
    try:
        yield tmp
        _fsync_path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_path(target.parent, directory=True)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", inputs: Iterable[str | os.PathLike | None] = (), *,
                 what: str = "output", **open_kwargs) -> Iterator[IO]:
    """``open(path, mode)`` that only replaces ``path`` once the block succeeds (module docstring)."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_write writes whole files; mode must start with 'w', got {mode!r}")
    with atomic_path(path, inputs, what=what) as tmp, open(tmp, mode, **open_kwargs) as f:
        yield f
