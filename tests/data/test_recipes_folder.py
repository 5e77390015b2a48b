"""Folder recipe: DIR/<class>/**/*.wav prepared, split once and recorded; every kind of bad folder named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from helix.cli import main
from helix.data.audio import AUDIO_EXTENSIONS
from helix.data.manifest import read_manifest
from helix.data.recipes import DatasetLayoutError, PrepareError, get_recipe
from helix.data.tasks import build_task, suggest_clip_seconds

from .corpora import write_audio

FOLDER = get_recipe("folder")
# (sample rate, channels, format) cycled over the files: mixed formats are accepted
FORMATS = ((16000, 1, "wav"), (44100, 2, "flac"), (22050, 1, "ogg"), (48000, 2, "wav"))


def make_folder(root, classes=("dog", "cat", "owl"), per_class=6, seconds=0.3):
    for c, name in enumerate(classes):
        for i in range(per_class):
            sr, ch, ext = FORMATS[(i + c) % len(FORMATS)]
            # nested folders: a class's files may sit at any depth
            write_audio(root / name / f"take{i % 2}" / f"{i}.{ext}", seconds + 0.1 * i, sr,
                        freq=300 + 200 * c, channels=ch)
    return root


def _prepare(root, **kw):
    return FOLDER.prepare(root, progress=False, workers=1, **kw)


def test_prepare_labels_from_folders_split_recorded_and_mixed_formats_accepted(tmp_path):
    root = make_folder(tmp_path / "mine")
    (root / "dog" / "notes.txt").write_text("not audio")
    (root / "dog" / "._0.wav").write_bytes(b"\x00\x05\x16\x07")  # macOS AppleDouble junk: hidden, not read
    mp3 = ".mp3" in AUDIO_EXTENSIONS  # libsndfile >= 1.1 reads (and writes) MP3
    if mp3:
        write_audio(root / "owl" / "call.MP3", 0.3, 32000, freq=700)
    result = _prepare(root)
    assert (result.items, result.classes, result.skipped) == (18 + mp3, 3, [])
    rows = read_manifest(result.manifest)
    assert {r["label"] for r in rows} == {"dog", "cat", "owl"}
    assert {(r["sample_rate"], r["channels"]) for r in rows} - {(32000, 1)} == {(16000, 1), (44100, 2), (22050, 1),
                                                                              (48000, 2)}
    per = Counter((r["label"], r["split"]) for r in rows)
    assert all(per[c, "validation"] == 1 and per[c, "test"] == 1 for c in ("dog", "cat", "owl"))
    assert (per["dog", "train"], per["cat", "train"], per["owl", "train"]) == (4, 4, 4 + mp3)
    summary = json.loads((root / "helix" / "summary.json").read_text())
    assert summary["split"] == {"made": "drawn", "seed": 0, "validation": 0.1, "test": 0.1}
    assert FOLDER.status(root).startswith(f"prepared: {18 + mp3} files, 3 classes")

    train, val, test, names = build_task("folder", root, None)
    assert names == ["cat", "dog", "owl"] and (len(train), len(val), len(test)) == (12 + mp3, 3, 3)
    assert train.clip_seconds == pytest.approx(0.8)  # 90th percentile of 0.3..0.8 s
    x, y = test[0]
    assert x.shape == (12800,) and isinstance(y, int)
    assert np.abs(x.numpy()).max() > 0.2


def test_rerun_keeps_the_recorded_split_and_places_only_new_files(tmp_path):
    root = make_folder(tmp_path / "mine")
    first = {r["path"]: r["split"] for r in read_manifest(_prepare(root).manifest)}
    for i in range(6, 12):
        write_audio(root / "dog" / f"new{i}.wav", 0.3, 16000, freq=300)
    rows = read_manifest(_prepare(root).manifest)
    assert len(rows) == 24
    assert all(first[r["path"]] == r["split"] for r in rows if r["path"] in first)
    assert Counter(r["split"] for r in rows if r["label"] == "dog") == {"train": 10, "validation": 1, "test": 1}  # 9.6/1.2/1.2
    # another seed asks for another split: drawn afresh
    again = {r["path"]: r["split"] for r in read_manifest(_prepare(root, seed=5).manifest)}
    assert again != {r["path"]: r["split"] for r in rows}


def test_a_class_folder_with_one_file_cannot_be_split(tmp_path):
    root = make_folder(tmp_path / "mine")
    write_audio(root / "bat" / "only.wav", 0.3, 16000)
    with pytest.raises(PrepareError, match=r"cannot split: each label needs at least 3 files .*'bat' has 1 file\(s\) "
                                           r"\(bat/only\.wav\)"):
        _prepare(root)
    assert not (root / "helix" / "manifest.tsv").exists()


def test_empty_class_folder_is_named_and_left_out_with_skip_bad(tmp_path):
    root = make_folder(tmp_path / "mine")
    (root / "frog" / "sub").mkdir(parents=True)
    (root / "frog" / "readme.txt").write_text("recordings to come")
    with pytest.raises(PrepareError, match=rf"{root / 'frog'}: class folder holds no audio files"):
        _prepare(root)
    result = _prepare(root, skip_bad=True)
    assert result.classes == 3 and str(root / "frog") in result.report.read_text()


def test_class_folders_differing_only_in_case_are_refused(tmp_path):
    root = make_folder(tmp_path / "mine", classes=("dog", "cat", "owl"))
    make_folder(tmp_path / "other", classes=("Dog",))
    os.rename(tmp_path / "other" / "Dog", root / "Dog")
    if not (root / "dog").exists() or not (root / "Dog").exists():
        pytest.skip("case-insensitive file system")
    with pytest.raises(DatasetLayoutError, match=r"class folders differ only in case \(Dog and dog\)"):
        _prepare(root)


def test_audio_outside_a_class_folder_and_undecodable_files_are_named(tmp_path):
    root = make_folder(tmp_path / "mine")
    write_audio(root / "stray.wav", 0.3, 16000)
    broken = root / "cat" / "broken.wav"
    broken.write_bytes(b"RIFF" + bytes(100))
    with pytest.raises(PrepareError) as err:
        _prepare(root)
    assert f"{root / 'stray.wav'}: audio file directly in the dataset folder" in str(err.value)
    assert str(broken) in str(err.value) and "--skip-bad" in str(err.value)
    assert _prepare(root, skip_bad=True).items == 18


def test_nothing_to_download_and_missing_root(tmp_path):
    with pytest.raises(ValueError, match="nothing to download"):
        FOLDER.download(tmp_path)
    with pytest.raises(DatasetLayoutError, match="is not a folder"):
        _prepare(tmp_path / "absent")
    assert FOLDER.status(tmp_path / "absent").startswith("missing")


def test_cli_prepare_folder_reports_split_and_clip_length(tmp_path, capsys):
    make_folder(tmp_path / "mine")
    out = subprocess.run([sys.executable, "-m", "helix.cli", "data", "prepare", "folder", "--root", "mine",
                          "--no-progress", "--seed", "3"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "18 files, 3 classes" in out.stdout
    assert "split: train 12, validation 3, test 3" in out.stdout
    assert "-> clip length 0.8 s when training" in out.stdout
    assert main(["data", "prepare", "folder", "--root", str(tmp_path / "mine"), "--csv", "x.csv"]) == 1
    assert "--csv is for `helix data prepare csv`" in capsys.readouterr().err
    assert main(["data", "prepare", "folder"]) == 1
    assert "needs --root DIR" in capsys.readouterr().err


def test_clip_length_covers_most_files_whole():
    assert suggest_clip_seconds([1.0] * 9 + [100.0]) == 1.0  # one long outlier does not set it
    assert suggest_clip_seconds([0.31, 0.52, 0.55]) == pytest.approx(0.6)  # rounded up to 0.1 s
    assert suggest_clip_seconds([2.0] * 5) == 2.0
    assert suggest_clip_seconds([600.0] * 3) == 30.0  # long recordings: cropped
    assert suggest_clip_seconds([0.01]) == pytest.approx(0.1)
