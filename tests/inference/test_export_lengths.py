"""Export with lengths: the TorchScript / ONNX graph takes (wave, lengths), and each clip of a padded
batch gets the logits it gets alone (in PyTorch and in the exported file)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from helix.inference.export import ExportedModel, export_checkpoint
from tests.inference.test_export import fresh_audio, make_checkpoint

MEL = {"d_model": 16, "d_state": 8, "pattern": "MA", "n_heads": 2}


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("name", ["helix_raw", "pure_mamba_mel"])
def test_exported_padded_batch_scores_each_clip_as_if_alone(tmp_path, fmt, name):
    kwargs = MEL if name == "helix_raw" else {"d_model": 16, "d_state": 8, "pattern": "MM"}
    ckpt, model = make_checkpoint(tmp_path / "best.pt", name, kwargs)
    result = export_checkpoint(ckpt, fmt, tmp_path / ("m.onnx" if fmt == "onnx" else "m.ts.pt"), lengths=True)
    assert result.lengths
    exported = ExportedModel(result.path, fmt)
    assert exported.takes_lengths
    T = 12000  # a length the export was not traced at
    n = np.array([T, 7001, 5120])
    wave = fresh_audio(3, T, 7) * (torch.arange(T) < torch.from_numpy(n)[:, None])
    out = exported(wave.numpy(), n)
    for i, k in enumerate(n):
        with torch.no_grad():
            alone = model(wave[i:i + 1, :k]).numpy()[0]
        np.testing.assert_allclose(out[i], alone, rtol=1e-4, atol=1e-4)
    # without lengths the file treats every clip as full
    np.testing.assert_allclose(exported(wave.numpy()), exported(wave.numpy(), np.full(3, T)), rtol=1e-6, atol=1e-6)


def test_a_graph_without_lengths_refuses_them_and_weights_refuse_the_flag(tmp_path):
    ckpt, _ = make_checkpoint(tmp_path / "best.pt")
    plain = ExportedModel(export_checkpoint(ckpt, "torchscript", tmp_path / "p.ts.pt").path)
    with pytest.raises(ValueError, match="exported without lengths"):
        plain(np.zeros((1, 8000), np.float32), np.array([4000]))
    with pytest.raises(ValueError, match="--lengths applies to torchscript and onnx"):
        export_checkpoint(ckpt, "safetensors", tmp_path / "w.safetensors", lengths=True)


def test_cli_export_with_lengths(tmp_path):
    make_checkpoint(tmp_path / "best.pt")
    run = subprocess.run([sys.executable, "-m", "helix.cli", "export", "best.pt", "--format", "onnx", "--lengths",
                          "-o", "model.onnx"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "inputs wave and lengths" in run.stdout and (tmp_path / "model.onnx").is_file()
