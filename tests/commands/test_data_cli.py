"""`helix data list | download | prepare` end to end: real files, a loopback server, exit codes."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from helix.cli import main

# the corpus builders live with the data tests; loaded by path so this folder needs no package
_spec = importlib.util.spec_from_file_location("helix_test_corpora", Path(__file__).parents[1] / "data" / "corpora.py")
corpora = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(corpora)


def test_list_shows_every_dataset(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HELIX_DATA_DIR", str(tmp_path))
    corpora.make_esc50(tmp_path / "esc50")
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["esc50", "urbansound8k", "speechcommands", "librispeech", "voxpopuli"]
    assert "found (official layout), not prepared" in out[0]
    assert f"not downloaded: run `helix data download urbansound8k --root {tmp_path / 'urbansound8k'}`" in out[1]


def test_prepare_a_copy_made_by_hand(tmp_path, capsys):
    root = tmp_path / "esc"
    corpora.make_esc50(root)
    assert main(["data", "prepare", "esc50", "--root", str(root), "--no-progress"]) == 0
    assert "ESC-50: 15 files, 3 classes" in capsys.readouterr().out
    assert main(["data", "list", "esc50", "--root", str(root)]) == 0
    assert "prepared: 15 files, 3 classes" in capsys.readouterr().out


def test_prepare_errors_exit_1_with_the_fix(tmp_path, capsys):
    assert main(["data", "prepare", "esc50", "--root", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("helix: error: ESC-50 is not downloaded") and "helix data download esc50" in err
    root = tmp_path / "esc"
    bad = corpora.make_esc50(root) / "audio" / "1-1000-A-0.wav"
    bad.write_bytes(b"")
    assert main(["data", "prepare", "esc50", "--root", str(root), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: empty file" in err and "--skip-bad" in err
    assert main(["data", "prepare", "esc50", "--root", str(root), "--skip-bad", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "14 files" in out and "skipped 1 unreadable file(s), each listed in" in out
    assert str(bad) in (root / "helix" / "prepare-report.txt").read_text()


def test_download_resumes_then_prepare(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("helix.data.download.RETRY_WAIT", 0.0)
    corpora.make_speechcommands(tmp_path / "src", per_word=3)
    site = tmp_path / "site"
    site.mkdir()
    corpora.tar_folder(tmp_path / "src", site / "speech_commands_v0.02.tar.gz", flat=True)
    root = tmp_path / "sc"
    with corpora.FixtureServer(site) as srv:
        srv.cut["speech_commands_v0.02.tar.gz"] = 10_000
        args = ["data", "download", "speechcommands", "--root", str(root), "--mirror", srv.url, "--no-progress"]
        assert main(args) == 0
    assert [r[1] for r in srv.requests if r[0] != "helix-checksums.json"] == [None, "bytes=10000-"]
    assert f"next: helix data prepare speechcommands --root {root}" in capsys.readouterr().out
    assert main(["data", "prepare", "speechcommands", "--root", str(root), "--no-progress"]) == 0
    assert "Speech Commands v0.02: 11 files, 3 classes" in capsys.readouterr().out


def test_unknown_names_and_subsets(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["data", "prepare", "esc51"])
    assert main(["data", "list", "esc51"]) == 1
    assert "unknown dataset 'esc51'" in capsys.readouterr().err
    assert main(["data", "prepare", "librispeech", "--root", str(tmp_path), "--subset", "nope"]) == 1
    assert "unknown librispeech subset 'nope'" in capsys.readouterr().err


def test_documented_relative_root_then_training_loads_from_elsewhere(tmp_path, capsys, monkeypatch):
    """`helix data prepare esc50 --root data/esc50` as the docs show it, run from a project folder."""
    from helix.data.tasks import build_task

    project = tmp_path / "project"
    monkeypatch.chdir(tmp_path)
    corpora.make_esc50(project / "data" / "esc50")
    monkeypatch.chdir(project)
    assert main(["data", "prepare", "esc50", "--root", "data/esc50", "--no-progress"]) == 0
    assert "-> data/esc50/helix/manifest.tsv" in capsys.readouterr().out
    assert main(["data", "list", "esc50", "--root", "data/esc50"]) == 0
    assert "prepared: 15 files" in capsys.readouterr().out
    train, _, _, _ = build_task("esc50", "data/esc50", 1.0)
    assert train[0][0].shape == (16000,)
    # a later run from another folder, with the root spelled from there
    monkeypatch.chdir(tmp_path)
    train, _, test, _ = build_task("esc50", "project/data/esc50", 1.0)
    assert train[0][0].shape == (16000,) and len(test) == 3


def test_default_root_is_relative_to_the_current_folder(tmp_path, capsys, monkeypatch):
    from helix.data.tasks import build_task

    monkeypatch.delenv("HELIX_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    corpora.make_speechcommands(Path("data") / "speechcommands", per_word=3)
    assert main(["data", "prepare", "speechcommands", "--no-progress"]) == 0
    monkeypatch.chdir(tmp_path / "data")
    assert len(build_task("speechcommands", "speechcommands", None)[0]) == 3
    monkeypatch.setenv("HELIX_DATA_DIR", "elsewhere")  # also relative: taken from the current folder
    monkeypatch.chdir(tmp_path)
    corpora.make_esc50(Path("elsewhere") / "esc50")
    assert main(["data", "prepare", "esc50", "--no-progress"]) == 0
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert build_task("esc50", "esc50", 1.0)[0][0][0].shape == (16000,)


def test_documented_download_through_helix_mirror(tmp_path, capsys, monkeypatch):
    """The docs' download command verbatim, in a subprocess, against a loopback mirror.

    The mirror's zip is not GitHub's, so it vouches for it with helix-checksums.json; then the
    documented prepare, and loading from another folder.
    """
    corpora.make_esc50(tmp_path / "src", folds=3)
    site = tmp_path / "site"
    site.mkdir()
    archive = corpora.zip_folder(tmp_path / "src" / "ESC-50-master", site / "master.zip")
    data = archive.read_bytes()
    (site / "helix-checksums.json").write_text(
        json.dumps({"master.zip": {"size": len(data), "md5": hashlib.md5(data).hexdigest()}}))
    work = tmp_path / "work"
    work.mkdir()
    with corpora.FixtureServer(site) as srv:
        run = subprocess.run([sys.executable, "-m", "helix.cli", "data", "download", "esc50", "--root", "data/esc50"],
                             cwd=work, env={**os.environ, "HELIX_MIRROR": srv.url}, capture_output=True, text=True,
                             timeout=120)
    assert run.returncode == 0, run.stderr
    assert [r[0] for r in srv.requests] == ["helix-checksums.json", "master.zip"]
    monkeypatch.chdir(work)
    assert main(["data", "prepare", "esc50", "--root", "data/esc50", "--no-progress"]) == 0
    assert "ESC-50: 9 files, 3 classes" in capsys.readouterr().out
    complete = json.loads((work / "data/esc50/helix/downloads/ESC-50-master.zip.complete").read_text())
    assert complete["md5"] == hashlib.md5(data).hexdigest()
    monkeypatch.chdir(tmp_path)
    from helix.data.recipes import get_recipe

    rows = get_recipe("esc50").read_manifest("work/data/esc50")
    assert all(Path(r["path"]).is_file() for r in rows)


def test_prepare_outputs_follow_the_umask(tmp_path, capsys):
    root = tmp_path / "esc"
    corpora.make_esc50(root)
    (root / "ESC-50-master" / "audio" / "1-1000-A-0.wav").write_bytes(b"")
    old = os.umask(0o022)
    try:
        assert main(["data", "prepare", "esc50", "--root", str(root), "--skip-bad", "--no-progress"]) == 0
    finally:
        os.umask(old)
    for name in ("manifest.tsv", "prepare-report.txt", "summary.json"):
        assert stat.S_IMODE((root / "helix" / name).stat().st_mode) == 0o644, name
