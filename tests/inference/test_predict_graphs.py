"""Inference on a GPU replays full batches of full windows from CUDA graphs: the probabilities and
embeddings equal the eager ones (skipped without a GPU; CPU never captures)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helix.inference.predict import load_predictor
from tests.inference.test_predict import make_checkpoint, noise


def test_cpu_inference_captures_nothing(tmp_path):
    path, _ = make_checkpoint(tmp_path / "best.pt")
    predictor = load_predictor(path, device="cpu", batch_size=4)
    predictor.predict(noise(6.0), window_seconds=0.5)
    assert predictor._graphs == {}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["pure_mamba_raw", "helix_mel"])
def test_gpu_replayed_batches_equal_eager_batches(tmp_path, name):
    kwargs = {"d_model": 32, "d_state": 8} if name.startswith("pure") else {"d_model": 32, "d_state": 8, "n_heads": 2}
    path, _ = make_checkpoint(tmp_path / "best.pt", name=name, kwargs=kwargs)
    graphed = load_predictor(path, device="cuda", batch_size=4)
    eager = load_predictor(path, device="cuda", batch_size=4)
    eager.cuda_graphs = False
    audio = [noise(7.3, seed=s) for s in range(3)]  # full batches, then a partial one and a short window
    for _ in range(2):  # the second pass replays what the first captured
        a = graphed.predict_many(audio, window_seconds=0.5)
        b = eager.predict_many(audio, window_seconds=0.5)
        for x, y in zip(a, b):
            np.testing.assert_allclose(x.probs, y.probs, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(graphed.embed(audio[0]), eager.embed(audio[0]), rtol=1e-4, atol=1e-5)
    assert all(c.graphs for c in graphed._graphs.values()), "no batch was replayed from a graph"
