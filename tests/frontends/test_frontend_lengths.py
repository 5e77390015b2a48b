"""Frontends on padded batches: token lengths, no leakage from padding, statistics over valid frames."""

import pytest
import torch

from helix.frontends import LogMel, MelFrontend, RawFrontend


def test_raw_token_lengths_are_floor_t_over_160_and_padding_tokens_are_zero():
    torch.manual_seed(0)
    fe = RawFrontend(8)
    lengths = torch.tensor([1600, 479, 160])
    assert fe.token_lengths(lengths).tolist() == [10, 2, 1]
    wave = torch.randn(3, 1600)
    tokens = fe(wave, lengths)
    assert torch.all(tokens[1, 2:] == 0) and torch.all(tokens[2, 1:] == 0)
    torch.testing.assert_close(tokens[1, :2], fe(wave[1:2, :479])[0])


def test_logmel_standardises_over_valid_frames_only():
    torch.manual_seed(0)
    lm = LogMel(n_fft=256, hop=128, n_mels=16)
    wave = torch.randn(2, 4000)
    wave[1, 1500:] = 5.0  # loud padding: must not move clip 1's statistics
    lengths = torch.tensor([4000, 1500])
    m = lm(wave, lengths)
    frames = 1500 // 128 + 1
    torch.testing.assert_close(m[1, :, :frames], lm(wave[1:2, :1500])[0])
    assert torch.all(m[1, :, frames:] == 0)
    assert abs(m[1, :, :frames].mean().item()) < 1e-5 and abs(m[1, :, :frames].std().item() - 1) < 1e-3


def test_mel_token_lengths_follow_frames_and_patches():
    fe = MelFrontend(8, n_fft=256, hop=128, n_mels=32, patch=16)
    lengths = torch.tensor([16000, 1500, 129])
    assert fe.token_lengths(lengths).tolist() == [fe.num_tokens(n) for n in lengths.tolist()]
    torch.manual_seed(0)
    wave = torch.randn(3, 16000)
    tokens = fe(wave, lengths)
    n1 = fe.num_tokens(1500)
    torch.testing.assert_close(tokens[1, :n1], fe(wave[1:2, :1500])[0], atol=1e-5, rtol=1e-4)
    assert torch.all(tokens[1, n1:] == 0)


@pytest.mark.parametrize("fe", [RawFrontend(8), MelFrontend(8, n_fft=256, hop=128, n_mels=32)])
def test_bad_lengths_raise_naming_the_argument(fe):
    wave = torch.randn(2, 2000)
    for bad in (torch.tensor([2001, 500]), torch.tensor([2000, 0]), torch.tensor([2000, -1]),
                torch.tensor([2000, 100]), torch.tensor([2000]), torch.tensor([2000.0, 500.0])):
        with pytest.raises(ValueError, match="lengths"):
            fe(wave, bad)
