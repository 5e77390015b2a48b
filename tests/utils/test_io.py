"""The one atomic writer: the umask decides the mode, inputs are never overwritten (also through
symlinks and hard links), a failed write leaves the old file, stale temporary files are removed."""

from __future__ import annotations

import os
import stat
import time

import pytest
import torch

from helix.utils.io import atomic_write, check_output, remove_stale_temp_files, temp_name
from helix.models.checkpoint import save_checkpoint

PAYLOAD = {"model": {"name": "m", "kwargs": {}, "num_classes": 2}, "class_names": ["a", "b"],
           "sample_rate": 16000, "clip_seconds": 1.0, "model_state": {"w": torch.ones(2)}}


@pytest.fixture
def umask():
    """Set a umask for one test and restore the previous one."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    with atomic_write(tmp_path / "out.txt", "w") as f:
        f.write("x")
    save_checkpoint(tmp_path / "last.pt", PAYLOAD)
    for name in ("out.txt", "last.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_refuses_the_input_through_symlinks_and_hard_links(tmp_path):
    src = tmp_path / "model.pt"
    src.write_bytes(b"precious")
    (tmp_path / "link.pt").symlink_to(src)
    os.link(src, tmp_path / "hard.pt")
    (tmp_path / "sub").mkdir()
    for out in (src, tmp_path / "link.pt", tmp_path / "hard.pt", tmp_path / "sub" / ".." / "model.pt"):
        with pytest.raises(ValueError, match="it is the input .*model.pt"):
            with atomic_write(out, "wb", [src]) as f:
                f.write(b"oops")
        with pytest.raises(ValueError, match="it is the input"):
            save_checkpoint(out, PAYLOAD, inputs=(src,))
    assert src.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard.pt", "link.pt", "model.pt", "sub"]


def test_folder_and_file_kinds_are_checked(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is an existing folder; give a file path"):
        check_output(tmp_path / "dir")
    with pytest.raises(ValueError, match="must be a folder, but a file of that name exists"):
        check_output(tmp_path / "file", folder=True)
    check_output(tmp_path / "dir", folder=True)
    check_output(tmp_path / "new.json", [tmp_path / "file"])  # a new name passes


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    out = tmp_path / "p.json"
    out.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(out, "w") as f:
            f.write("half")
            raise RuntimeError("killed mid-write")
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]


def test_writing_through_a_symlink_updates_its_target(tmp_path):
    (tmp_path / "real.txt").write_text("old")
    (tmp_path / "alias.txt").symlink_to(tmp_path / "real.txt")
    with atomic_write(tmp_path / "alias.txt", "w") as f:
        f.write("new")
    assert (tmp_path / "alias.txt").is_symlink() and (tmp_path / "real.txt").read_text() == "new"


def test_stale_temporary_files_of_a_killed_run_are_removed(tmp_path):
    stale = tmp_path / temp_name("last.pt")
    stale.write_bytes(b"half a checkpoint")
    hour_ago = time.time() - 3600
    os.utime(stale, (hour_ago, hour_ago))
    fresh = tmp_path / temp_name("last.pt")  # a write that started after this process: not ours to judge
    fresh.write_bytes(b"in progress")
    future = time.time() + 60
    os.utime(fresh, (future, future))
    other = tmp_path / temp_name("best.pt")
    other.write_bytes(b"")
    os.utime(other, (hour_ago, hour_ago))
    save_checkpoint(tmp_path / "last.pt", PAYLOAD)
    assert not stale.exists() and fresh.exists() and other.exists()
    assert remove_stale_temp_files(tmp_path) == [other]
