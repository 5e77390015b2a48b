"""Inference: sliding windows, batching, aggregation, and every kind of bad input (files written here)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

import helix
from helix.data.audio import AUDIO_EXTENSIONS, AudioError, load_audio
from helix.inference.predict import Failure, load_predictor
from helix.inference.windows import iter_windows, resolve_window, run_windows, window_starts
from helix.models import create_model
from helix.models.checkpoint import CheckpointError, save_checkpoint

SR = 16000
CLASSES = ["dog", "rain", "siren"]
KWARGS = {"d_model": 16, "d_state": 8, "pattern": "MA", "n_heads": 2}


def make_checkpoint(path, name="helix_raw", kwargs=KWARGS, clip_seconds=0.5, **extra):
    torch.manual_seed(0)
    model = create_model(name, len(CLASSES), **kwargs)
    payload = {"model": {"name": name, "kwargs": dict(kwargs), "num_classes": len(CLASSES)},
               "class_names": CLASSES, "sample_rate": SR, "clip_seconds": clip_seconds,
               "model_state": model.state_dict(), **extra}
    save_checkpoint(path, payload)
    return path, model.eval()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")


def noise(seconds, sr=SR, channels=1, seed=0):
    x = 0.1 * np.random.default_rng(seed).standard_normal((int(seconds * sr), channels)).astype(np.float32)
    return x[:, 0] if channels == 1 else x


def manual_probs(model, wave, window, hop):
    """The specification, written out: windows at window_starts, mean softmax; audio shorter than
    one window is scored alone (no zero padding)."""
    with torch.no_grad():
        probs = np.concatenate([torch.softmax(model(torch.from_numpy(wave[s:s + window][None])), -1).numpy()
                                for s in window_starts(len(wave), window, hop)])
    return probs.mean(0), probs


# ------------------------------------------------------------------ windows
@pytest.mark.parametrize("T, window, hop", [(1, 8, 4), (7, 8, 4), (8, 8, 4), (9, 8, 4), (63, 8, 4),
                                            (500, 64, 64), (501, 64, 17), (100, 10, 25)])
def test_streamed_windows_match_window_starts(T, window, hop):
    x = np.arange(1, T + 1, dtype=np.float32)
    rng = np.random.default_rng(T)
    cuts = np.sort(rng.choice(np.arange(1, T), size=min(5, T - 1), replace=False)) if T > 1 else []
    blocks = np.split(x, cuts)  # odd block sizes, some smaller than a window
    wins = list(iter_windows(blocks, window, hop))
    assert [w.start for w in wins] == window_starts(T, window, hop)
    for w in wins:
        want = np.zeros(window, np.float32)
        seg = x[w.start:w.start + window]
        want[:len(seg)] = seg
        np.testing.assert_array_equal(w.samples, want)
        assert w.length == min(window, T)
    covered = np.zeros(T, bool)
    for w in wins:
        covered[w.start:w.start + w.length] = True
    assert covered.all() or hop > window  # every sample is seen unless the hop leaves gaps


def test_resolve_window_defaults_and_errors():
    assert resolve_window(None, None, 5.0, SR) == (80000, 40000)
    assert resolve_window(2.0, 2.0, 5.0, SR) == (32000, 32000)
    with pytest.raises(ValueError, match="hop"):
        resolve_window(None, 0, 5.0, SR)
    with pytest.raises(ValueError, match="needs at least 160"):
        resolve_window(0.001, None, 5.0, SR, min_samples=160)


@pytest.mark.parametrize("window, hop, message", [
    (None, float("inf"), "hop must be a positive number of seconds, got inf"),
    (None, float("nan"), "hop must be a positive number of seconds, got nan"),
    (None, "x", "hop must be a number of seconds"),
    (1e9, None, "longer than the 600 s limit"),
    (float("nan"), None, "window must be a positive number"),
    (-1.0, None, "window must be a positive number"),
])
def test_resolve_window_refuses_non_finite_and_huge_values(window, hop, message):
    with pytest.raises(ValueError, match=message):
        resolve_window(window, hop, 5.0, SR)
    assert resolve_window(None, None, 900.0, SR) == (900 * SR, 450 * SR)  # a model trained on long clips


def test_run_windows_batches_across_sources_and_isolates_failures():
    seen = []

    def forward(x):
        seen.append(x.shape[0])
        return {"sum": x.sum(axis=1, keepdims=True).astype(np.float64)}

    def broken():
        yield np.ones(20, np.float32)
        raise AudioError("b.wav", "decoding failed")

    sources = [("a", [np.ones(10, np.float32)]), ("b", broken()), ("c", [np.full(30, 2, np.float32)])]
    out = list(run_windows(forward, sources, window=10, hop=10, batch_size=2))
    assert [r.key for r in out] == ["a", "b", "c"]
    assert out[0].error is None and out[0].count == 1 and out[0].sums["sum"][0] == 10
    assert isinstance(out[1].error, AudioError)
    assert out[2].count == 3 and out[2].sums["sum"][0] == 60
    assert max(seen) == 2 and sum(seen) >= 4  # batches of two, shared between sources


# ------------------------------------------------------------------ prediction
def test_predict_file_matches_specification(ckpt, tmp_path):
    path, model = ckpt
    wave = noise(2.3)
    sf.write(tmp_path / "a.wav", wave, SR, subtype="FLOAT")
    pred = helix.load(path).predict(tmp_path / "a.wav", top_k=2, timeline=True)
    want, per_window = manual_probs(model, wave, 8000, 4000)
    np.testing.assert_allclose(pred.probs, want, atol=1e-5)
    assert pred.num_windows == len(per_window) == 9  # 0, .25, ..., 1.75 s and the end-aligned 1.8 s
    assert [w.start for w in pred.timeline] == pytest.approx([0.25 * i for i in range(8)] + [1.8])
    assert pred.timeline[-1].end == pytest.approx(2.3)
    np.testing.assert_allclose(np.stack([w.probs for w in pred.timeline]), per_window, atol=1e-5)
    assert [k for k, _ in pred.top] == [CLASSES[i] for i in np.argsort(-want)[:2]]
    assert pred.duration == pytest.approx(2.3) and pred.label == pred.top[0][0]
    d = pred.to_dict()
    assert d["windows"] == 9 and len(d["timeline"]) == 9 and len(d["top"]) == 2


def test_predict_resamples_and_mixes_stereo_like_load_audio(ckpt, tmp_path):
    path, model = ckpt
    sf.write(tmp_path / "b.flac", noise(1.3, sr=44100, channels=2), 44100)
    pred = load_predictor(path).predict(str(tmp_path / "b.flac"))
    ref = load_audio(tmp_path / "b.flac", SR)  # the one decoder: mono mix + soxr resampling
    np.testing.assert_allclose(pred.probs, manual_probs(model, ref, 8000, 4000)[0], atol=1e-5)


def test_waveform_input_short_audio_and_batch_invariance(ckpt):
    path, model = ckpt
    wave = noise(1.7, seed=3)
    p1 = load_predictor(path, batch_size=1).predict(wave, hop_seconds=0.3)
    p5 = load_predictor(path, batch_size=5).predict(torch.from_numpy(np.stack([wave, wave])), hop_seconds=0.3)
    np.testing.assert_allclose(p1.probs, p5.probs, atol=1e-5)  # (C, T) input: channels averaged
    short = noise(0.2, seed=4)  # shorter than the window: one window of the audio alone, masked
    ps = load_predictor(path).predict(short)
    assert ps.num_windows == 1
    np.testing.assert_allclose(ps.probs, manual_probs(model, short, 8000, 4000)[0], atol=1e-5)
    resampled = load_predictor(path).predict(noise(1.0, sr=8000), sample_rate=8000)
    assert resampled.duration == pytest.approx(1.0)


def test_silent_file_predicts_with_warning(ckpt, tmp_path):
    sf.write(tmp_path / "silence.wav", np.zeros(12000, np.float32), SR)
    with pytest.warns(UserWarning, match="silence.wav: silent audio"):
        pred = load_predictor(ckpt[0]).predict(tmp_path / "silence.wav")
    assert np.isfinite(pred.probs).all() and pred.probs.sum() == pytest.approx(1.0, abs=1e-5)


def _bad_files(tmp_path):
    sf.write(tmp_path / "full.wav", noise(1.0), SR)
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "truncated.wav").write_bytes(data[: len(data) // 2])
    sf.write(tmp_path / "full.flac", noise(3.0), SR)
    data = (tmp_path / "full.flac").read_bytes()
    (tmp_path / "truncated.flac").write_bytes(data[: len(data) // 2])  # fails mid-stream
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("this is a text file, not a WAV\n" * 20)
    sf.write(tmp_path / "nan.wav", np.full(8000, np.nan, np.float32), SR, subtype="FLOAT")
    return {"truncated.wav": "truncated", "truncated.flac": "decoding failed", "empty.wav": "empty file",
            "text.wav": "cannot decode", "nan.wav": "NaN", "missing.wav": "not found"}


def test_bad_files_fail_clearly_and_others_complete(ckpt, tmp_path):
    expected = _bad_files(tmp_path)
    predictor = load_predictor(ckpt[0], batch_size=3)
    for name, reason in expected.items():
        with pytest.raises(AudioError, match=reason) as err:
            predictor.predict(tmp_path / name)
        assert name in str(err.value)  # the message names the file
    inputs = ["full.wav", *expected, "full.flac"]
    results = list(predictor.predict_many([tmp_path / n for n in inputs]))
    assert [type(r) for r in results] == [type(results[0])] + [Failure] * len(expected) + [type(results[0])]
    seconds = []
    list(predictor.predict_many([tmp_path / "full.wav", tmp_path / "full.flac"], progress=seconds.append))
    assert sum(seconds) == pytest.approx(4.0)  # progress reports every decoded second once
    good = predictor.predict(tmp_path / "full.flac")
    np.testing.assert_allclose(results[-1].probs, good.probs, atol=1e-6)


def test_corrupted_and_incompatible_checkpoints(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x02not a checkpoint" * 50)
    with pytest.raises(CheckpointError, match="garbage.pt"):
        helix.load(garbage)
    path, _ = make_checkpoint(tmp_path / "good.pt")
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="cut.pt.*corrupted"):
        helix.load(tmp_path / "cut.pt")
    ckpt = torch.load(path, weights_only=False)
    torch.save({**ckpt, "format": 999, "helix_version": "9.0"}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="future.pt.*format 999"):
        helix.load(tmp_path / "future.pt")
    # same format number, but weights for a different architecture (another helix version's model)
    torch.save({**ckpt, "model": {**ckpt["model"], "kwargs": {**KWARGS, "d_model": 32}}}, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match="shape.pt cannot be loaded"):
        helix.load(tmp_path / "shape.pt")
    torch.save({**ckpt, "model": {**ckpt["model"], "kwargs": {**KWARGS, "n_layerz": 3}}}, tmp_path / "opt.pt")
    with pytest.raises(CheckpointError, match="opt.pt cannot be loaded.*n_layerz"):
        helix.load(tmp_path / "opt.pt")
    with pytest.raises(CheckpointError, match="not found"):
        helix.load(tmp_path / "nope.pt")


def test_mel_model_and_missing_clip_length(tmp_path):
    path, model = make_checkpoint(tmp_path / "mel.pt", "helix_mel", clip_seconds=None)
    predictor = load_predictor(path)
    with pytest.raises(ValueError, match="window length"):
        predictor.predict(noise(1.0))
    pred = predictor.predict(noise(1.5), window_seconds=1.0, hop_seconds=0.5)
    np.testing.assert_allclose(pred.probs, manual_probs(model, noise(1.5), 16000, 8000)[0], atol=1e-5)


@pytest.mark.parametrize("ext, fmt", [(".ogg", "OGG"), (".mp3", "MP3")])
def test_ogg_and_mp3_files_decode(ckpt, tmp_path, ext, fmt):
    if ext not in AUDIO_EXTENSIONS:
        pytest.skip(f"this platform's libsndfile does not decode {fmt}")
    sf.write(tmp_path / f"c{ext}", noise(1.0, sr=22050), 22050, format=fmt)
    pred = load_predictor(ckpt[0]).predict(tmp_path / f"c{ext}")
    ref = load_audio(tmp_path / f"c{ext}", SR)
    assert pred.duration == pytest.approx(len(ref) / SR)
    np.testing.assert_allclose(pred.probs, manual_probs(ckpt[1], ref, 8000, 4000)[0], atol=1e-5)


def test_non_finite_output_fails_only_its_own_file(ckpt, tmp_path):
    """A window whose output is NaN/inf fails its source, named, and the batch it shared goes on."""
    sf.write(tmp_path / "ok.wav", noise(1.0), SR)
    sf.write(tmp_path / "huge.wav", np.tile(np.float32([3e38, -3e38]), 8000), SR, subtype="FLOAT")
    sf.write(tmp_path / "one.wav", np.float32([0.5]), 48000)  # no sample left at 16 kHz
    predictor = load_predictor(ckpt[0], batch_size=4)
    names = ["ok.wav", "huge.wav", "one.wav", "ok.wav"]
    results = list(predictor.predict_many([tmp_path / n for n in names]))
    assert [type(r).__name__ for r in results] == ["Prediction", "Failure", "Failure", "Prediction"]
    assert "huge.wav: the model's output is NaN/inf" in str(results[1].error)
    assert "far outside [-1, 1]" in str(results[1].error)
    assert "one.wav: no audio samples" in str(results[2].error)
    np.testing.assert_allclose(results[0].probs, results[3].probs, atol=1e-6)
    with pytest.raises(AudioError, match="<waveform>: the model's output is NaN/inf"):
        predictor.predict(np.full(16000, 3e38, np.float32))


def test_corrupted_weights_are_blamed_per_file_not_on_the_batch(tmp_path):
    path, model = make_checkpoint(tmp_path / "nan.pt")
    state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
             for k, v in model.state_dict().items()}
    save_checkpoint(path, {"model": {"name": "helix_raw", "kwargs": dict(KWARGS), "num_classes": 3},
                           "class_names": CLASSES, "sample_rate": SR, "clip_seconds": 0.5, "model_state": state})
    sf.write(tmp_path / "a.wav", noise(1.0), SR)
    (result,) = load_predictor(path).predict_many([tmp_path / "a.wav"])
    assert isinstance(result, Failure)
    assert "a.wav" in str(result.error) and "weights may be corrupted" in str(result.error)
