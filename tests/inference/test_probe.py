"""The frozen-feature route: embed a prepared CSV corpus with a frozen checkpoint, fit a linear probe.

Real files throughout: tones written with soundfile, prepared by the CSV recipe, embedded by a
real (randomly initialised, tiny) checkpoint saved the project's way.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from helix.data.manifest import read_manifest, write_manifest
from helix.data.recipes import get_recipe
from helix.data.tasks import build_task
from helix.inference.predict import load_predictor
from helix.inference.probe import _json_ready, fit_probe, load_probe, probe_manifest, probe_parts, save_probe
from helix.models import create_model
from helix.models.checkpoint import save_checkpoint

SR = 16000
FREQS = {"low": 300.0, "high": 2400.0}

pytestmark = pytest.mark.usefixtures("one_thread")


def write_clip(path, freqs, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.5 * SR)) / SR
    wave = sum(np.sin(2 * np.pi * f * (1 + 0.03 * rng.standard_normal()) * t) for f in freqs) / len(freqs)
    wave = 0.3 * wave + 0.01 * rng.standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave.astype(np.float32), SR)


def make_corpus(root, labels, column="split", values=("train",) * 8 + ("validation",) * 4 + ("test",) * 4):
    """A prepared CSV corpus: for each label (``a`` or ``a;b``), one clip per entry of ``values``
    (its split, or its fold with ``column="fold"``)."""
    lines = [f"path,label,{column}"]
    n = 0
    for label in labels:
        for value in values:
            name = f"clips/{n:03d}.wav"
            write_clip(root / name, [FREQS[x] for x in label.split(";")], seed=n)
            lines.append(f'{name},"{label}",{value}')
            n += 1
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return get_recipe("csv").prepare(root, progress=False, workers=1, csv=str(root / "labels.csv")).manifest


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "frozen.pt"
    torch.manual_seed(0)
    kwargs = {"d_model": 16, "d_state": 4, "pattern": "MA", "n_heads": 2}
    model = create_model("helix_mel", 3, **kwargs)
    save_checkpoint(path, {"model": {"name": "helix_mel", "kwargs": kwargs, "num_classes": 3},
                           "class_names": ["x", "y", "z"], "sample_rate": SR, "clip_seconds": 0.5,
                           "model_state": model.state_dict()})
    return path


@pytest.fixture(scope="module")
def predictor(checkpoint):
    return load_predictor(checkpoint, batch_size=16)


def test_probe_learns_separable_tones_and_saves_safetensors(tmp_path, predictor):
    manifest = make_corpus(tmp_path / "data", ["low", "high"])
    report, probe, failures = probe_manifest(predictor, manifest, grid=(0.01, 1.0, 100.0))
    assert not failures and report["metric"] == "acc" and report["class_names"] == ["high", "low"]
    assert report["test"]["value"] >= 0.9 and report["validation"]["value"] >= 0.9  # chance is 0.5
    assert report["clips"] == {"train": 16, "validation": 8, "test": 8} and report["embedding_dim"] == 16
    assert [g["C"] for g in report["grid"]] == [0.01, 1.0, 100.0] and report["C"] in (0.01, 1.0, 100.0)

    path = save_probe(tmp_path / "probe.safetensors", probe)
    assert path.read_bytes()[:1] != b"\x80"  # not a pickle
    again = load_probe(path)
    assert again.weight.shape == (2, 16) and again.bias.shape == (2,) and again.C == report["C"]
    x = np.stack([predictor.embed(r["path"]) for r in read_manifest(manifest) if r["split"] == "test"])
    np.testing.assert_allclose(again.probs(x), probe.probs(x), rtol=1e-5, atol=1e-6)
    assert np.allclose(again.probs(x).sum(axis=1), 1.0)


def test_test_labels_never_influence_the_choice_of_C(tmp_path, predictor):
    manifest = make_corpus(tmp_path / "data", ["low", "high"])
    rows = read_manifest(manifest)
    swap = {"low": "high", "high": "low"}
    flipped = [{**r, "label": swap[r["label"]] if r["split"] == "test" else r["label"]} for r in rows]
    other = write_manifest(tmp_path / "data" / "helix" / "flipped.tsv", flipped, tmp_path / "data")
    grid = (0.001, 0.1, 10.0)
    a, _, _ = probe_manifest(predictor, manifest, grid=grid)
    b, _, _ = probe_manifest(predictor, other, grid=grid)
    assert a["C"] == b["C"] and a["grid"] == b["grid"] and a["validation"] == b["validation"]
    assert b["test"]["value"] == pytest.approx(1 - a["test"]["value"])  # the test part was scored, once


def test_validation_picks_C_ties_going_to_the_smaller():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 5))
    y = (x[:, 0] + 0.8 * rng.standard_normal(60) > 0).astype(np.int64)
    fit = fit_probe(x[:40], y[:40], x[40:], y[40:], ["a", "b"], False, grid=(100.0, 0.0001, 1.0))
    assert [g["C"] for g in fit.grid] == [0.0001, 1.0, 100.0]
    best = max(g["validation"] for g in fit.grid)
    tied = [g for g in fit.grid if g["validation"] == best]
    assert fit.C == min(tied, key=lambda g: (g["validation_loss"], g["C"]))["C"]
    with pytest.raises(ValueError, match="positive"):
        fit_probe(x[:40], y[:40], x[40:], y[40:], ["a", "b"], False, grid=(0.0,))


def test_multi_label_probe_reports_map(tmp_path, predictor):
    manifest = make_corpus(tmp_path / "data", ["low", "high", "high;low"],
                           values=("train",) * 6 + ("validation",) * 3 + ("test",) * 3)
    report, probe, _ = probe_manifest(predictor, manifest, grid=(0.1, 1.0))
    assert report["multilabel"] and report["metric"] == "map" and report["metric_name"] == "mAP"
    assert report["chance_acc"] is None and "macro_auc" in report["test"]
    assert report["test"]["value"] >= 0.8 and probe.weight.shape == (2, 16)
    json.dumps(report, allow_nan=False)  # strict JSON, as probe.json is written
    p = probe.probs(np.zeros((1, 16)))
    assert 0 < p.min() and p.max() < 1 and not np.isclose(p.sum(), 1.0)  # sigmoids, not a softmax


def test_a_bad_clip_is_named_and_left_out(tmp_path, predictor):
    manifest = make_corpus(tmp_path / "data", ["low", "high"])
    bad = next(r["path"] for r in read_manifest(manifest) if r["split"] == "train")
    with open(bad, "wb") as f:
        f.write(b"RIFF\x00\x00\x00\x00WAVEnot audio")
    report, _, failures = probe_manifest(predictor, manifest, grid=(1.0,))
    assert len(failures) == 1 and failures[0].source == bad and bad.split("/")[-1] in str(failures[0].error)
    assert report["clips"]["train"] == 15 and report["failures"][0]["file"] == bad


def test_folds_match_training_and_bad_requests_are_refused(tmp_path):
    root = tmp_path / "data"
    manifest = make_corpus(root, ["low", "high"], column="fold", values=(1, 1, 2, 2, 3, 3, 4, 4))
    rows = read_manifest(manifest)
    for fold in (None, 2, 4):
        parts, names, multilabel = probe_parts(rows, fold)
        train, val, test, task_names = build_task("csv", root, 0.5, fold=fold)
        assert names == task_names and not multilabel
        for part, ds in zip(("train", "validation", "test"), (train, val, test)):
            assert sorted(r["path"] for r in parts[part]) == sorted(p.decode() for p in ds.paths)
    assert {r["fold"] for r in probe_parts(rows, 4)[0]["validation"]} == {1}  # wraps around like training
    with pytest.raises(ValueError, match="fold 7 is not one of"):
        probe_parts(rows, 7)
    plain = [{**r, "fold": 0, "split": "train"} for r in rows]
    with pytest.raises(ValueError, match="not folds"):
        probe_parts(plain, 2)
    with pytest.raises(ValueError, match="validation and test part"):
        probe_parts(plain)


def test_unscorable_values_are_null_in_the_report():
    assert _json_ready({"mAP": float("nan"), "grid": [{"C": 1.0, "v": float("inf")}], "n": 3}) == \
        {"mAP": None, "grid": [{"C": 1.0, "v": None}], "n": 3}
