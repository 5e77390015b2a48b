"""Variable-length batches: every registered model, clip by clip, equals the clip run alone."""

import pytest
import torch

from helix.models import create_model, list_models

T = 6000
LENGTHS = [6000, 1700, 4321]  # full, short (10 raw tokens / 4 mel frames), odd


def small_model(name, **extra):
    if name.startswith("aum"):
        kw = {"d_model": 16, "depth": 2, "d_state": 4, "n_mels": 32, "max_seconds": 0.25}
    else:
        kw = {"d_model": 16, "d_state": 4, "n_heads": 2, "n_mels": 32}
    return create_model(name, num_classes=3, **{"scan_backend": "reference", **kw, **extra})


@pytest.mark.parametrize("name", list_models())
def test_each_clip_equals_the_clip_alone_and_padding_gets_no_gradient(name):
    torch.manual_seed(0)
    model = small_model(name).eval()
    wave = torch.randn(3, T) * 0.3
    lengths = torch.tensor(LENGTHS)
    wave.requires_grad_(True)
    logits = model(wave, lengths)
    feats = model.forward_features(wave, lengths)
    with torch.no_grad():
        for i, n in enumerate(LENGTHS):
            clip = wave[i:i + 1, :n]
            torch.testing.assert_close(logits[i], model(clip)[0], atol=2e-5, rtol=1e-4)
            torch.testing.assert_close(feats[i], model.forward_features(clip)[0], atol=2e-5, rtol=1e-4)
        # without lengths the padding changes the short clip: the masks are what make them equal
        assert (model(wave)[1] - model(wave[1:2, :LENGTHS[1]])[0]).abs().max() > 1e-4
    logits.sum().backward()
    for i, n in enumerate(LENGTHS):
        assert torch.all(wave.grad[i, n:] == 0), f"gradient reached clip {i}'s padding"
        assert wave.grad[i, :n].abs().sum() > 0


@pytest.mark.parametrize("name", ["helix_raw", "helix_mel", "aum_tiny"])
def test_all_full_lengths_take_the_unmasked_path(name):
    torch.manual_seed(0)
    model = small_model(name).eval()
    wave = torch.randn(2, T)
    with torch.no_grad():
        assert torch.equal(model(wave, torch.tensor([T, T])), model(wave))


def test_pool_first_k_counts_valid_tokens_only():
    torch.manual_seed(0)
    model = small_model("pure_attention_raw", pool_first_k=20).eval()
    wave = torch.randn(2, T)
    lengths = torch.tensor([T, 1600])  # clip 1 has 10 tokens, fewer than K
    with torch.no_grad():
        x, tok = model.encode(wave, lengths, return_lengths=True)
        assert tok.tolist() == [T // 160, 10]
        assert torch.all(x[1, 10:] == 0)
        torch.testing.assert_close(model.forward_features(wave, lengths)[1], x[1, :10].mean(0))
        torch.testing.assert_close(model.forward_features(wave, lengths)[0], x[0, :20].mean(0))


@pytest.mark.parametrize("name", ["helix_raw", "helix_mel", "aum_tiny"])
@pytest.mark.parametrize("lengths, match", [
    (torch.tensor([T + 1, 100]), "at most the padded length"),
    (torch.tensor([T, 0]), "at least"),
    (torch.tensor([T, -5]), "at least"),
    (torch.tensor([T, 100]), "at least"),  # shorter than one token (raw 160, mel 513 samples)
    (torch.tensor([T]), r"shape \(B,\)"),
    (torch.tensor([[T, T]]), r"shape \(B,\)"),
    (torch.tensor([6000.0, 3000.0]), "integer"),
    ([T, T], "torch.Tensor|tensor"),
])
def test_bad_lengths_name_the_argument(name, lengths, match):
    model = small_model(name)
    with pytest.raises(ValueError, match=f"lengths.*({match})|({match}).*lengths"):
        model(torch.randn(2, T), lengths)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the Triton kernels compiled)")
@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("lean", [True, False])
def test_gpu_each_clip_equals_the_clip_alone(name, lean):
    # the fused blocks (Triton scan, conv, lean autograd function) with lengths, compiled; the
    # interpreter runs the same kernels op by op in tests/ops/test_lengths.py (a whole model there
    # takes minutes)
    if name.startswith("aum") and not lean:
        pytest.skip("Audio Mamba has no fused blocks to make lean")
    torch.manual_seed(0)
    extra = {} if name.startswith("aum") else {"lean_blocks": lean}
    model = small_model(name, **extra).cuda().eval()
    for m in model.modules():
        if hasattr(m, "scan_backend"):
            m.scan_backend = "triton"
    wave = (torch.randn(3, T) * 0.3).cuda().requires_grad_(True)
    lengths = torch.tensor(LENGTHS).cuda()
    logits = model(wave, lengths)
    with torch.no_grad():
        for i, n in enumerate(LENGTHS):
            torch.testing.assert_close(logits[i], model(wave[i:i + 1, :n])[0], atol=1e-4, rtol=1e-3)
    logits.sum().backward()
    for i, n in enumerate(LENGTHS):
        assert torch.all(wave.grad[i, n:] == 0)


@pytest.mark.parametrize("name", ["helix_mel", "aum_tiny"])
def test_each_clip_equals_the_clip_alone_on_the_default_cpu_backend(name):
    # scan_backend="auto": the numba kernels where numba imports (given the masked problem), else the reference
    torch.manual_seed(0)
    model = small_model(name, scan_backend="auto").eval()
    wave = torch.randn(3, T) * 0.3
    with torch.no_grad():
        logits = model(wave, torch.tensor(LENGTHS))
        for i, n in enumerate(LENGTHS):
            torch.testing.assert_close(logits[i], model(wave[i:i + 1, :n])[0], atol=2e-5, rtol=1e-4)
