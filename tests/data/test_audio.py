"""helix.data.audio: decoding, mono mix, soxr resampling, crops, streaming, and every bad file."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from helix.data.audio import AUDIO_EXTENSIONS, AudioError, fit_length, iter_audio_blocks, load_audio, probe_audio

from .corpora import tone, write_audio


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[spectrum.argmax()])


@pytest.mark.parametrize("ext,subtype", [(".wav", "PCM_16"), (".flac", "PCM_24"), (".ogg", "VORBIS")])
def test_load_audio_decodes_each_format(tmp_path, ext, subtype):
    path = write_audio(tmp_path / f"a{ext}", 0.5, 16000, freq=440, subtype=subtype)
    x = load_audio(path)
    assert x.dtype == np.float32 and x.shape == (8000,)
    tol = 0.05 if ext == ".ogg" else 1e-3  # Vorbis is lossy
    np.testing.assert_allclose(x, tone(0.5, 16000, 440), atol=tol)


def test_stereo_is_mixed_to_mono_or_kept(tmp_path):
    path = write_audio(tmp_path / "st.wav", 0.25, 16000, channels=2, subtype="FLOAT")
    ref = tone(0.25, 16000, channels=2)
    np.testing.assert_allclose(load_audio(path), ref.mean(axis=1), atol=1e-6)
    both = load_audio(path, mono=False)
    assert both.shape == (2, 4000)
    np.testing.assert_allclose(both, ref.T, atol=1e-6)


def test_resampling_is_band_limited_and_matches_a_polyphase_reference(tmp_path):
    sr = 44100
    inband = write_audio(tmp_path / "in.wav", 1.0, sr, freq=3000, subtype="FLOAT")
    x = load_audio(inband, 16000)
    assert x.shape == (16000,)
    assert abs(_peak_hz(x, 16000) - 3000) < 2
    # scipy's polyphase filter is an independent band-limited resampler
    ref = signal.resample_poly(tone(1.0, sr, 3000), 160, 441)
    np.testing.assert_allclose(x[500:-500], ref[500:-500], atol=2e-2)
    # 10 kHz is above the new Nyquist (8 kHz): a proper resampler removes it, nearest-neighbour
    # picking would fold it to 6 kHz at full amplitude
    above = write_audio(tmp_path / "above.wav", 1.0, sr, freq=10000, subtype="FLOAT")
    y = load_audio(above, 16000)
    assert np.abs(y[500:-500]).max() < 0.01
    nearest = tone(1.0, sr, 10000)[(np.arange(16000) * sr // 16000)]
    assert np.abs(nearest).max() > 0.4


def test_wrong_rate_refused_when_resampling_disabled(tmp_path):
    path = write_audio(tmp_path / "hi.wav", 0.1, 44100)
    with pytest.raises(AudioError, match=r"hi\.wav.*44100 Hz, expected 16000 Hz and resampling is disabled"):
        load_audio(path, 16000, resample=False)
    assert load_audio(path, 44100, resample=False).shape == (4410,)


def test_offset_and_duration_read_only_that_part(tmp_path):
    sr = 8000
    ramp = (np.arange(sr * 2) / (sr * 2)).astype(np.float32)
    path = tmp_path / "ramp.wav"
    sf.write(path, ramp, sr, subtype="FLOAT")
    part = load_audio(path, sr, offset=0.5, duration=0.25)
    np.testing.assert_array_equal(part, ramp[4000:6000])
    with pytest.raises(AudioError, match="past the end"):
        load_audio(path, sr, offset=3.0)


def test_expected_frames_catches_a_file_changed_after_prepare(tmp_path):
    path = write_audio(tmp_path / "a.wav", 0.1, 16000)
    with pytest.raises(AudioError, match=r"a\.wav: has 1600 frames but the manifest recorded 1700"):
        load_audio(path, expected_frames=1700)


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize("ext", [".wav", ".flac", ".ogg"])
def test_truncated_files_raise_naming_the_file(tmp_path, ext):
    path = _truncate(write_audio(tmp_path / f"cut{ext}", 1.0, 16000))
    with pytest.raises(AudioError, match=rf"cut\{ext}: .*(truncated|decod)"):
        probe_audio(path)
    # loading for training refuses too: it never pads a short read with silence
    with pytest.raises(AudioError, match=rf"cut\{ext}"):
        load_audio(path)


@pytest.mark.parametrize(
    "name,content,reason",
    [
        ("empty.wav", b"", "empty file"),
        ("garbage.flac", b"fLaC" + bytes(range(256)) * 8, "cannot decode"),
        ("notes.xyz", b"RIFF....", "unsupported extension '.xyz'"),
        ("noext", b"RIFF....", "unsupported extension"),
    ],
)
def test_bad_files_raise_audio_error(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    for fn in (load_audio, probe_audio, lambda p: next(iter_audio_blocks(p, 0.1))):
        with pytest.raises(AudioError, match=reason) as info:
            fn(path)
        assert info.value.path == str(path) and str(path) in str(info.value)


def test_missing_and_frameless_files(tmp_path):
    with pytest.raises(AudioError, match="file not found"):
        load_audio(tmp_path / "nope.wav")
    sf.write(tmp_path / "zero.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="no audio frames"):
        load_audio(tmp_path / "zero.wav")
    assert issubclass(AudioError, ValueError)


def test_probe_reports_native_format_and_finds_nan(tmp_path):
    info = probe_audio(write_audio(tmp_path / "s.flac", 0.5, 22050, channels=2))
    assert (info.frames, info.sample_rate, info.channels) == (11025, 22050, 2)
    assert info.duration == pytest.approx(0.5)
    bad = tone(0.1, 16000)
    bad[10] = np.nan
    sf.write(tmp_path / "nan.wav", bad, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        probe_audio(tmp_path / "nan.wav")


@pytest.mark.parametrize("native", [16000, 22050])
def test_iter_audio_blocks_equals_one_shot_load(tmp_path, native):
    path = write_audio(tmp_path / "long.flac", 3.3, native, channels=2)
    blocks = list(iter_audio_blocks(path, 0.5, 16000))
    assert all(b.shape == (8000,) for b in blocks[:-1]) and 0 < len(blocks[-1]) <= 8000
    whole = load_audio(path, 16000)
    np.testing.assert_allclose(np.concatenate(blocks), whole, atol=1e-6)


def test_iter_audio_blocks_is_lazy(tmp_path):
    path = write_audio(tmp_path / "l.wav", 2.0, 16000)
    gen = iter_audio_blocks(path, 0.25)
    assert next(gen).shape == (4000,)  # a generator: nothing beyond the first block was needed
    with pytest.raises(ValueError):
        next(iter_audio_blocks(path, 0.0))


def test_fit_length_pads_and_crops():
    x = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(fit_length(x, 3), [0, 1, 2])
    np.testing.assert_array_equal(fit_length(x, 3, offset=2), [2, 3, 4])
    np.testing.assert_array_equal(fit_length(x, 7), [0, 1, 2, 3, 4, 0, 0])
    assert fit_length(np.ones((2, 4), np.float32), 6).shape == (2, 6)


def test_extensions_cover_the_corpora():
    assert {".wav", ".flac", ".ogg"} <= set(AUDIO_EXTENSIONS)


def _noise_ogg(path, seconds=4.0, sr=16000):
    """Noise compresses badly, so the stream spans many Ogg pages and a cut keeps whole ones."""
    x = (0.3 * np.random.default_rng(0).standard_normal(int(seconds * sr))).astype(np.float32)
    sf.write(path, x, sr, format="OGG", subtype="VORBIS")
    return path


@pytest.mark.parametrize("keep", [0.5, 0.8, 0.95])
def test_ogg_cut_short_is_truncated_not_a_shorter_file(tmp_path, keep):
    path = _truncate(_noise_ogg(tmp_path / "cut.ogg"), keep)
    # libsndfile itself reports the pages before the cut as a whole, shorter file
    assert 0 < sf.info(str(path)).frames < 64000
    for decode in (probe_audio, load_audio, lambda p: list(iter_audio_blocks(p, 1.0))):
        with pytest.raises(AudioError, match=r"cut\.ogg: file is truncated \(libsndfile: Ogg"):
            decode(path)


def test_whole_ogg_is_not_mistaken_for_truncated(tmp_path):
    path = _noise_ogg(tmp_path / "whole.ogg")
    assert probe_audio(path).frames == 64000
    assert sum(len(b) for b in iter_audio_blocks(path, 1.0)) == 64000


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_non_regular_files_are_refused_at_once(tmp_path, kind):
    import os

    path = tmp_path / f"input.{'wav' if kind == 'fifo' else 'flac'}"
    if kind == "fifo":
        os.mkfifo(path)  # opening it for reading would block until a writer comes: never
    else:
        path.mkdir()
    name = "FIFO" if kind == "fifo" else "directory"
    for decode in (probe_audio, load_audio, lambda p: list(iter_audio_blocks(p, 1.0))):
        with pytest.raises(AudioError, match=rf"input\.\w+: not a regular file \(a {name}\)"):
            decode(path)
