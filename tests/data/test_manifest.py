"""helix.data.manifest: round trip, relative paths, atomic writes, malformed files."""

from __future__ import annotations

import os
import shutil
import stat

import pytest

from helix.data.manifest import (
    MANIFEST_FIELDS,
    ManifestError,
    atomic_write_text,
    class_names,
    read_manifest,
    write_manifest,
)


def _row(path, label="dog", **kw):
    row = {"path": path, "label": label, "split": "", "fold": 1, "speaker": "", "duration": 0.25,
           "sample_rate": 44100, "frames": 11025, "channels": 1}
    row.update(kw)
    return row


def test_round_trip_keeps_values_and_types(tmp_path):
    root = tmp_path / "ds"
    rows = [_row(str(root / "audio" / "a.wav")),
            _row(str(root / "audio" / "b.wav"), "rain", split="train", fold=0, speaker="19")]
    path = write_manifest(root / "helix" / "manifest.tsv", rows, root)
    back = read_manifest(path)
    assert [r["path"] for r in back] == [str(root / "audio" / "a.wav"), str(root / "audio" / "b.wav")]
    assert back[1]["label"] == "rain" and back[1]["speaker"] == "19" and back[1]["split"] == "train"
    assert back[0]["fold"] == 1 and isinstance(back[0]["duration"], float) and back[0]["frames"] == 11025
    assert set(back[0]) == set(MANIFEST_FIELDS)
    assert "audio/a.wav" in path.read_text()  # stored relative
    assert not list(path.parent.glob(".*tmp"))  # no temporary file left behind


def test_dataset_folder_can_move(tmp_path):
    root = tmp_path / "ds"
    write_manifest(root / "helix" / "manifest.tsv", [_row(str(root / "audio" / "a.wav"))], root)
    shutil.move(root, tmp_path / "moved")
    moved = read_manifest(tmp_path / "moved" / "helix" / "manifest.tsv")
    assert moved[0]["path"] == str(tmp_path / "moved" / "audio" / "a.wav")


def test_malformed_manifests_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path / "none.tsv")
    (tmp_path / "x.tsv").write_text("path\tlabel\n")
    with pytest.raises(ManifestError, match="not a helix manifest"):
        read_manifest(tmp_path / "x.tsv")
    good = write_manifest(tmp_path / "m.tsv", [_row(str(tmp_path / "a.wav"))], tmp_path)
    good.write_text(good.read_text() + "b.wav\tdog\n")
    with pytest.raises(ManifestError, match=r"m\.tsv:4: expected 9 columns"):
        read_manifest(good)
    with pytest.raises(ManifestError, match="tab or newline"):
        write_manifest(tmp_path / "n.tsv", [_row(str(tmp_path / "a.wav"), label="a\tb")], tmp_path)


def test_class_names_are_sorted_and_skip_unlabelled():
    rows = [_row("a", "rain"), _row("b", "dog"), _row("c", ""), _row("d", "rain")]
    assert class_names(rows) == ["dog", "rain"]


def test_relative_root_and_paths_resolve_from_any_folder(tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    # a relative root, and row paths relative to the current folder as a recipe builds them
    write_manifest("data/ds/helix/manifest.tsv", [_row("data/ds/audio/a.wav")], "data/ds")
    text = (tmp_path / "work" / "data" / "ds" / "helix" / "manifest.tsv").read_text()
    assert text.splitlines()[0].endswith("root=..") and "\naudio/a.wav\t" in text
    want = str(tmp_path / "work" / "data" / "ds" / "audio" / "a.wav")
    assert read_manifest("data/ds/helix/manifest.tsv")[0]["path"] == want
    monkeypatch.chdir(tmp_path)  # elsewhere, through another relative path
    assert read_manifest("work/data/ds/helix/manifest.tsv")[0]["path"] == want


def test_paths_are_kept_as_seen_under_the_root_not_resolved(tmp_path):
    elsewhere = tmp_path / "big-disk" / "clips"
    elsewhere.mkdir(parents=True)
    root = tmp_path / "ds"
    root.mkdir()
    (root / "audio").symlink_to(elsewhere, target_is_directory=True)
    path = write_manifest(root / "helix" / "manifest.tsv", [_row(str(root / "audio" / "a.wav"))], root)
    assert read_manifest(path)[0]["path"] == str(root / "audio" / "a.wav")


def test_a_path_outside_the_root_is_refused(tmp_path):
    root = tmp_path / "ds"
    for outside in (tmp_path / "other" / "a.wav", root / ".." / "a.wav", root):
        with pytest.raises(ManifestError, match="is not inside the dataset root"):
            write_manifest(root / "helix" / "manifest.tsv", [_row(str(outside))], root)


def test_writes_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        a = atomic_write_text(tmp_path / "a.txt", "x")
        os.umask(0o077)
        b = write_manifest(tmp_path / "m.tsv", [_row(str(tmp_path / "a.wav"))], tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(a.stat().st_mode) == 0o644  # not mkstemp's 0600
    assert stat.S_IMODE(b.stat().st_mode) == 0o600


def test_a_manifest_from_the_relative_root_bug_says_to_prepare_again(tmp_path):
    root = tmp_path / "data" / "esc50"
    (root / "audio").mkdir(parents=True)
    (root / "audio" / "a.wav").write_bytes(b"x")
    path = write_manifest(root / "helix" / "manifest.tsv", [_row(str(root / "audio" / "a.wav"))], root)
    assert read_manifest(path)[0]["path"] == str(root / "audio" / "a.wav")
    # what an older helix wrote for `--root data/esc50`: the cwd-relative path, root included
    path.write_text(path.read_text().replace("\naudio/a.wav", "\ndata/esc50/audio/a.wav"))
    with pytest.raises(ManifestError, match=r"older helix from a relative --root: its paths repeat the root "
                                            r"\(data/esc50/\.\.\.\)\. Run `helix data prepare`"):
        read_manifest(path)
