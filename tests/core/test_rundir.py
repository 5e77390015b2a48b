"""The source digest that run records and ``helix bench`` carry next to the git commit: the same for
the same files wherever they lie, different when any source file differs, read once per process."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import helix.core.rundir as rundir
from helix.core.rundir import environment, source_digest, tree_digest


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """``source_digest`` reading a copy of the package's files (free to edit), its cache emptied."""
    root = Path(shutil.copytree(rundir.SOURCE_ROOT, tmp_path / "helix", ignore=shutil.ignore_patterns("__pycache__")))
    monkeypatch.setattr(rundir, "SOURCE_ROOT", root)
    source_digest.cache_clear()
    yield root
    source_digest.cache_clear()


def test_stable_across_calls_read_once_and_independent_of_the_folder(package_copy, tmp_path):
    digest = source_digest()
    assert len(digest) == 64 and int(digest, 16) >= 0
    (package_copy / "cli.py").write_text("# changed after the first read\n")
    assert source_digest() == digest and source_digest.cache_info().misses == 1  # read once per process
    source_digest.cache_clear()
    assert source_digest() != digest
    # a copy elsewhere (an installed wheel, a tree copied onto another machine): the same digest
    moved = shutil.copytree(package_copy, tmp_path / "elsewhere" / "site-packages" / "helix")
    assert tree_digest(moved) == source_digest()


def test_changes_with_any_source_file_and_only_with_them(package_copy, tmp_path):
    before = tree_digest(package_copy)
    (package_copy / "__pycache__").mkdir()
    (package_copy / "__pycache__" / "cli.cpython-311.pyc").write_bytes(b"\0\1")
    (package_copy / "notes.txt").write_text("not code\n")
    assert tree_digest(package_copy) == before  # bytecode and stray files are not the code
    module = package_copy / "core" / "rundir.py"
    text = module.read_text()
    module.write_text(text + "\n")
    assert tree_digest(package_copy) != before  # one byte of one module
    module.write_text(text)
    assert tree_digest(package_copy) == before
    preset = package_copy / "configs" / "demo.yaml"
    preset.write_text(preset.read_text().replace("epochs: 8", "epochs: 9"))
    edited = tree_digest(package_copy)
    assert edited != before  # a shipped preset
    (package_copy / "extra.py").write_text("")
    assert tree_digest(package_copy) != edited  # an added (empty) module
    for name in ("a", "b"):  # the same bytes under another name
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}.py").write_text("x = 1\n")
    assert tree_digest(tmp_path / "a") != tree_digest(tmp_path / "b")


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="needs GNU coreutils")
def test_the_shell_check_in_the_docstring_prints_the_same_digest(package_copy):
    line = ("find . -type f \\( -name '*.py' -o -name '*.yaml' \\) -printf '%P\\n' | LC_ALL=C sort "
            "| xargs sha256sum | sha256sum")
    assert line in " ".join(tree_digest.__doc__.split())
    out = subprocess.run(["bash", "-c", line], cwd=package_copy, capture_output=True, text=True, check=True).stdout
    assert out.split()[0] == tree_digest(package_copy)


def test_recorded_next_to_the_git_commit(package_copy):
    env = environment(torch.device("cpu"), 1, "fp32")
    assert "git_commit" in env and env["source_sha256"] == tree_digest(package_copy)
