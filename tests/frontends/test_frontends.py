import numpy as np
import pytest
import torch

from helix.frontends import LogMel, MelFrontend, RawFrontend


@pytest.mark.parametrize("seconds, tokens", [(5, 500), (300, 30_000), (1, 100)])
def test_raw_token_count(seconds, tokens):
    fe = RawFrontend(8)
    assert fe.num_tokens(seconds * 16000) == tokens
    if seconds <= 5:
        assert fe(torch.randn(2, seconds * 16000)).shape == (2, tokens, 8)


def test_raw_token_count_floor():
    assert RawFrontend(4)(torch.randn(1, 16000 + 159)).shape[1] == 100


@pytest.mark.parametrize("kernel,stride", [(160, 160), (160, 80)], ids=["frames", "overlapping"])
def test_raw_tokens_are_the_conv_outputs(kernel, stride):
    """Non-overlapping frames run as a reshape and one product with the conv's weight: the values and
    gradients of Conv1d itself (float64), for a length that leaves a partial frame; overlapping frames
    run the conv."""
    torch.manual_seed(0)
    fe = RawFrontend(8, kernel, stride).double()
    wave = torch.randn(3, 16000 + 97, dtype=torch.float64)
    got = fe.tokens(wave)
    want = torch.nn.functional.conv1d(wave.unsqueeze(1), fe.conv.weight, fe.conv.bias, stride=stride).transpose(1, 2)
    assert got.shape == (3, fe.num_tokens(wave.shape[1]), 8)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(got)
    grads = [torch.autograd.grad(out, (fe.conv.weight, fe.conv.bias), g) for out in (got, want)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_mel_token_count_5s():
    fe = MelFrontend(8)
    out = fe(torch.randn(2, 80000))
    assert out.shape == (2, 80, 8) == (2, fe.num_tokens(80000), 8)  # (128/16) * ceil(157/16)


def _independent_logmel(x: np.ndarray, sr=16000, n_fft=1024, hop=512, n_mels=128) -> np.ndarray:
    """numpy: centred zero-padded frames, periodic Hann, rfft power, HTK triangles, log, standardise."""
    padded = np.pad(x, (n_fft // 2, n_fft // 2))
    n_frames = 1 + (len(padded) - n_fft) // hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = np.stack([padded[i * hop: i * hop + n_fft] * window for i in range(n_frames)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (F, n_freqs)
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    edges = 700 * (10 ** (np.linspace(mel(0), mel(sr / 2), n_mels + 2) / 2595) - 1)
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    fb = np.zeros((n_freqs := len(freqs), n_mels))
    for m in range(n_mels):
        lo, c, hi = edges[m], edges[m + 1], edges[m + 2]
        for i in range(n_freqs):
            if lo < freqs[i] <= c:
                fb[i, m] = (freqs[i] - lo) / (c - lo)
            elif c < freqs[i] < hi:
                fb[i, m] = (hi - freqs[i]) / (hi - c)
    logmel = np.log(power @ fb + 1e-6).T  # (n_mels, F)
    return (logmel - logmel.mean()) / (logmel.std(ddof=1) + 1e-5)


def test_logmel_matches_independent_numpy():
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    x = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(16000)).astype(np.float32)
    ours = LogMel()(torch.from_numpy(x)[None])[0].numpy()
    ref = _independent_logmel(x.astype(np.float64))
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=2e-3)


def test_logmel_peak_at_tone_frequency():
    t = torch.arange(16000) / 16000
    spec = LogMel()(torch.sin(2 * torch.pi * 1000 * t)[None])[0]
    peak_bin = spec.mean(dim=1).argmax().item()
    centre_hz = 700 * (10 ** (np.linspace(0, 2595 * np.log10(1 + 8000 / 700), 130)[1:-1] / 2595) - 1)
    assert abs(centre_hz[peak_bin] - 1000) < 60


@pytest.mark.parametrize(
    "wave, match",
    [
        (torch.randn(16000), "shape \\(B, T\\)"),
        (torch.randn(1, 1, 16000), "shape \\(B, T\\)"),
        (torch.ones(1, 16000, dtype=torch.int16), "floating point"),
        (torch.randn(1, 100), "too short"),
        ([0.0] * 16000, "torch.Tensor"),
    ],
)
@pytest.mark.parametrize("fe", [RawFrontend(4), MelFrontend(4)], ids=["raw", "mel"])
def test_bad_waveforms(fe, wave, match):
    with pytest.raises(ValueError, match=match):
        fe(wave)
