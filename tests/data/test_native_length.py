"""Native-length clips (data.batching=bucket): a clip keeps its own length, cropped only past the
clip length and never padded; ``sample_counts`` predicts each item's length from the manifest
(resampling included) without decoding; folder/csv and the fold corpora build them, the stitched
and synthetic tasks refuse."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from helix.cli import main
from helix.data.batching import PadCollate
from helix.data.dataset import ClipDataset
from helix.data.recipes import get_recipe
from helix.data.tasks import build_task

from .corpora import write_audio


def _rows(tmp_path, files):
    """files: (seconds, native rate) -> manifest rows of ramp WAVs (value = position in the file)."""
    rows = []
    for i, (seconds, sr) in enumerate(files):
        n = int(round(seconds * sr))
        p = tmp_path / f"c{i}.wav"
        sf.write(p, (np.arange(n) / n).astype(np.float32), sr, subtype="FLOAT")
        rows.append({"path": str(p), "label": "ab"[i % 2], "frames": n, "sample_rate": sr})
    return rows


def test_native_length_keeps_short_clips_unpadded_and_crops_long_ones(tmp_path):
    rows = _rows(tmp_path, [(0.25, 16000), (1.0, 16000), (0.3, 22050), (0.1, 44100), (0.5, 16000)])
    ds = ClipDataset(rows, ["a", "b"], 0.5, 16000, native_length=True)
    counts = ds.sample_counts()
    assert counts.dtype == np.int64
    assert counts.tolist() == [4000, 8000, 4800, 1600, 8000]  # 1.0 s cropped to the 0.5 s maximum
    for i in range(len(ds)):
        x, _ = ds[i]
        assert x.shape == (counts[i],)
    short, _ = ds[0]
    assert float(short[-1]) == pytest.approx(1 - 1 / 4000)  # the file's own last sample, not padding
    centred, _ = ds[1]
    assert float(centred[0]) == pytest.approx(0.25, abs=1e-3)  # evaluation crops the middle
    # the fixed protocol is unchanged: every clip padded or cropped to 0.5 s
    fixed = ClipDataset(rows, ["a", "b"], 0.5, 16000)
    assert all(fixed[i][0].shape == (8000,) for i in range(len(fixed)))
    assert float(fixed[0][0][4000:].abs().max()) == 0.0


def test_native_clips_collate_with_their_lengths(tmp_path):
    rows = _rows(tmp_path, [(0.25, 16000), (0.1, 44100), (0.5, 16000)])
    ds = ClipDataset(rows, ["a", "b"], 0.5, 16000, native_length=True)
    wave, labels, lengths = PadCollate([2000, 8000])([ds[i] for i in range(3)])
    assert wave.shape == (3, 8000) and lengths.tolist() == ds.sample_counts().tolist()
    assert labels.tolist() == [0, 1, 0]


def test_folder_task_builds_native_length_datasets(tmp_path, capsys):
    root = tmp_path / "mine"
    durations = [0.12, 0.2, 0.31, 0.45, 0.6, 0.25]
    for c, name in enumerate(("hum", "whistle")):
        for i, s in enumerate(durations):
            write_audio(root / name / f"{i}.wav", s, (16000, 22050)[i % 2], freq=200 + 1500 * c)
    assert main(["data", "prepare", "folder", "--root", str(root), "--no-progress"]) == 0
    capsys.readouterr()
    train, val, test, names = build_task("folder", root, 0.5, native_length=True)
    assert names == ["hum", "whistle"]
    for ds in (train, val, test):
        assert ds.native_length
        assert all(ds[i][0].shape == (ds.sample_counts()[i],) for i in range(len(ds)))
    counts = np.concatenate([d.sample_counts() for d in (train, val, test)])
    assert counts.max() == 8000 and counts.min() == round(0.12 * 16000)
    fixed, *_ = build_task("folder", root, 0.5)
    assert not fixed.native_length and fixed[0][0].shape == (8000,)


def test_tasks_that_build_fixed_clips_refuse_native_length(tmp_path):
    with pytest.raises(ValueError, match="synthetic_order builds every clip at clip_seconds.*folder, csv"):
        build_task("synthetic_order", None, 0.25, native_length=True)
    with pytest.raises(ValueError, match="librispeech builds every clip"):
        build_task("librispeech", tmp_path, 1.0, native_length=True)


def test_fold_corpus_builds_native_length_datasets(esc50_root):
    get_recipe("esc50").prepare(esc50_root, progress=False)
    train, val, test, _ = build_task("esc50", esc50_root, 1.0, native_length=True)
    assert [d.native_length for d in (train, val, test)] == [True] * 3
    assert train[0][0].shape == (4000,)  # 0.25 s at 44.1 kHz, resampled, not padded to 1 s
