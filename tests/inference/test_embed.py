"""Embeddings: file = mean of window embeddings = forward_features of the windows; NumPy/JSON output."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from helix.inference.embed import embed_many, embeddings_to_json, npy_name, write_npy_folder
from helix.inference.predict import Failure, load_predictor
from helix.inference.windows import window_starts
from helix.models import create_model
from helix.models.checkpoint import save_checkpoint

SR = 16000


def make_checkpoint(path, name, kwargs, clip_seconds=0.5, classes=4):
    torch.manual_seed(1)
    model = create_model(name, classes, **kwargs)
    save_checkpoint(path, {"model": {"name": name, "kwargs": kwargs, "num_classes": classes},
                           "class_names": [f"spk{i}" for i in range(classes)], "sample_rate": SR,
                           "clip_seconds": clip_seconds, "model_state": model.state_dict()})
    return path, model.eval()


def window_features(model, wave, window, hop):
    """(n_windows, D): forward_features of each window, placed as in prediction."""
    wins = []
    for s in window_starts(len(wave), window, hop):
        w = np.zeros(window, np.float32)
        seg = wave[s:s + window]
        w[:len(seg)] = seg
        wins.append(w)
    with torch.no_grad():
        return model.forward_features(torch.from_numpy(np.stack(wins))).numpy()


@pytest.mark.parametrize("name, kwargs", [
    ("helix_raw", {"d_model": 16, "d_state": 8, "pattern": "MA", "n_heads": 2}),
    ("aum_tiny", {"d_model": 16, "d_state": 8, "depth": 2, "max_seconds": 0.5}),
])
def test_embeddings_are_pooled_features(tmp_path, name, kwargs):
    path, model = make_checkpoint(tmp_path / "m.pt", name, kwargs)
    wave = 0.1 * np.random.default_rng(0).standard_normal(int(1.6 * SR)).astype(np.float32)
    sf.write(tmp_path / "a.wav", wave, SR, subtype="FLOAT")
    predictor = load_predictor(path)
    per_window = predictor.embed(tmp_path / "a.wav", per_window=True)
    want = window_features(model, wave, 8000, 4000)
    assert per_window.shape == want.shape == (6, 16)
    np.testing.assert_allclose(per_window, want, atol=1e-5)
    np.testing.assert_allclose(predictor.embed(tmp_path / "a.wav"), want.mean(0), atol=1e-5)


def test_writers_round_trip(tmp_path):
    path, _ = make_checkpoint(tmp_path / "m.pt", "helix_raw", {"d_model": 16, "d_state": 8, "pattern": "M"})
    rng = np.random.default_rng(1)
    (tmp_path / "in" / "x").mkdir(parents=True)
    files = [tmp_path / "in" / "a.wav", tmp_path / "in" / "x" / "a.wav"]
    for f in files:
        sf.write(f, 0.1 * rng.standard_normal(12000).astype(np.float32), SR)
    (tmp_path / "in" / "bad.wav").write_bytes(b"RIFF0000WAVE")
    predictor = load_predictor(path)
    results = list(embed_many(predictor, [*files, tmp_path / "in" / "bad.wav"], per_window=True))
    good = [r for r in results if not isinstance(r, Failure)]
    bad = [r for r in results if isinstance(r, Failure)]
    assert len(good) == 2 and len(bad) == 1 and "bad.wav" in str(bad[0].error)
    index = json.loads(write_npy_folder(tmp_path / "out", good, bad, {"checkpoint": str(path)}).read_text())
    assert index["dim"] == 16 and index["failures"][0]["file"].endswith("bad.wav")
    names = [e["npy"] for e in index["files"]]
    assert len(set(names)) == 2  # two files called a.wav get distinct arrays
    for entry, res in zip(index["files"], good):
        arr = np.load(tmp_path / "out" / entry["npy"])
        np.testing.assert_array_equal(arr, res.windows)
        assert len(entry["windows"]) == arr.shape[0] == 2  # 0-0.5 s and 0.25-0.75 s
    doc = embeddings_to_json(good, bad, {})
    assert len(doc["embeddings"][0]["windows"]) == 2 and len(doc["embeddings"][0]["windows"][0]["embedding"]) == 16
    used = set()
    assert npy_name("a/b c.wav", used) == "a__b__c.npy" and npy_name("a/b c.wav", used) == "a__b__c-2.npy"
