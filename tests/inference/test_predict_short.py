"""Audio shorter than one window is scored as that audio alone: predict/embed hand the model each
window's length (masked), so a 1 s clip with a 4 s window gives what the model gives the 1 s clip,
and it batches beside full windows without changing them."""

from __future__ import annotations

import numpy as np
import soundfile as sf
import torch

from helix.inference.predict import Predictor
from helix.models import create_model

SR = 16000


def _predictor(name="helix_raw", **kw):
    torch.manual_seed(0)
    model = create_model(name, 3, d_model=16, d_state=4, pattern="MA", n_heads=2, **kw).eval()
    return Predictor(model, ["a", "b", "c"], SR, clip_seconds=4.0, batch_size=4), model


def test_one_second_clip_with_a_four_second_window_equals_the_clip_alone(tmp_path):
    predictor, model = _predictor()
    rng = np.random.default_rng(0)
    clip = (0.1 * rng.standard_normal(SR)).astype(np.float32)          # 1 s
    sf.write(tmp_path / "clip.wav", clip, SR, subtype="FLOAT")
    with torch.no_grad():
        alone = torch.softmax(model(torch.from_numpy(clip)[None]), -1)[0].numpy()
        features = model.forward_features(torch.from_numpy(clip)[None])[0].numpy()
        padded = torch.softmax(model(torch.from_numpy(np.pad(clip, (0, 3 * SR)))[None]), -1)[0].numpy()
    assert np.abs(padded - alone).max() > 1e-4  # the zero padding would change the answer
    pred = predictor.predict(tmp_path / "clip.wav", window_seconds=4.0)
    assert pred.num_windows == 1
    np.testing.assert_allclose(pred.probs, alone, atol=1e-5)
    np.testing.assert_allclose(predictor.embed(clip, window_seconds=4.0), features, atol=1e-5)
    # batched with a long file's full windows, the short one is still itself and theirs unchanged
    long = (0.1 * rng.standard_normal(9 * SR)).astype(np.float32)
    both = list(predictor.predict_many([long, clip], window_seconds=4.0, timeline=True))
    np.testing.assert_allclose(both[1].probs, alone, atol=1e-5)
    with torch.no_grad():
        first = torch.softmax(model(torch.from_numpy(long[:4 * SR])[None]), -1)[0].numpy()
    np.testing.assert_allclose(both[0].timeline[0].probs, first, atol=1e-5)


def test_audio_shorter_than_the_model_accepts_keeps_just_enough_padding():
    predictor, model = _predictor()
    tiny = np.full(50, 0.1, np.float32)  # under one raw token (160 samples)
    pred = predictor.predict(tiny, window_seconds=1.0)
    with torch.no_grad():
        ref = torch.softmax(model(torch.from_numpy(np.pad(tiny, (0, model.min_samples - 50)))[None]), -1)[0]
    np.testing.assert_allclose(pred.probs, ref.numpy(), atol=1e-5)
