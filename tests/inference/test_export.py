"""Export: the export-friendly scan equals the reference; exported files match PyTorch on fresh audio."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helix.cli import main
from helix.inference.export import ExportedModel, export_checkpoint, export_model, export_twin
from helix.models import create_model
from helix.ops.selective_scan import selective_scan_reference
from helix.ops.selective_scan.export import selective_scan_export
from helix.models.checkpoint import save_checkpoint

SR = 16000
RAW = {"d_model": 16, "d_state": 8, "pattern": "MA", "n_heads": 2}


def make_checkpoint(path, name="helix_raw", kwargs=RAW, clip_seconds=0.5):
    torch.manual_seed(0)
    model = create_model(name, 3, **kwargs)
    save_checkpoint(path, {"model": {"name": name, "kwargs": kwargs, "num_classes": 3},
                           "class_names": ["a", "b", "c"], "sample_rate": SR, "clip_seconds": clip_seconds,
                           "model_state": model.state_dict()})
    return path, model.eval()


def fresh_audio(batch, samples, seed):
    """Random audio unlike the export's own check audio (other seed, other scale)."""
    return 0.3 * torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("loop", ["script", "unroll"])
@pytest.mark.parametrize("Bsz, D, N, L", [(1, 4, 3, 1), (2, 6, 8, 63), (3, 5, 4, 130)])
def test_export_scan_matches_reference(loop, Bsz, D, N, L):
    g = torch.Generator().manual_seed(L)
    u, z = (torch.randn(Bsz, D, L, generator=g) for _ in range(2))
    delta = torch.rand(Bsz, D, L, generator=g)  # positive step sizes, as softplus makes them: a stable scan
    A = -torch.rand(D, N, generator=g) * 2 - 0.1
    B, C = (torch.randn(Bsz, N, L, generator=g) for _ in range(2))
    Dskip, bias = torch.randn(D, generator=g), torch.randn(D, generator=g)
    for kw in ({}, {"D": Dskip, "z": z, "delta_bias": bias, "delta_softplus": True}):
        ref = selective_scan_reference(u, delta, A, B, C, **kw)
        out = selective_scan_export(u, delta, A, B, C, **kw, loop=loop)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["helix_mel", "aum_tiny"])
def test_export_twin_is_the_same_network_built_for_export(name):
    """Export is a construction mode (scan_backend="export", mel_stft="conv"), not a patch: the twin
    gives the model's outputs and the model itself is untouched."""
    kw = {"depth": 2, "max_seconds": 1.0} if name.startswith("aum") else {"pattern": "MA"}
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, d_model=16, d_state=4, **kw).eval()
    twin = export_twin(model)
    backends = lambda m: {x.scan_backend for x in m.modules() if hasattr(x, "scan_backend")}  # noqa: E731
    assert backends(twin) == {"export"} and backends(model) == {"auto"}
    assert twin.config.mel_stft == "conv" and model.config.mel_stft == "fft"
    wave = torch.randn(2, 8000)
    with torch.no_grad():
        torch.testing.assert_close(twin(wave), model(wave), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exported_raw_model_matches_pytorch(tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    path, model = make_checkpoint(tmp_path / "best.pt")
    result = export_checkpoint(path, fmt)
    assert result.path == tmp_path / ("best.onnx" if fmt == "onnx" else "best.ts.pt")
    assert result.dynamic_length and result.num_samples == 8000
    exported = ExportedModel(result.path)
    assert exported.metadata["class_names"] == ["a", "b", "c"] and exported.metadata["sample_rate"] == SR
    for batch, samples in ((3, 8000), (1, 8000 + 1234)):  # other batch sizes and lengths than traced
        wave = fresh_audio(batch, samples, seed=batch)
        with torch.no_grad():
            ref = model(wave).numpy()
        np.testing.assert_allclose(exported(wave.numpy()), ref, atol=1e-4, rtol=1e-4)


def test_exported_mel_model_onnx_matches_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    _, model = make_checkpoint(tmp_path / "m.pt", "helix_mel", RAW)
    result = export_model(model, tmp_path / "mel.onnx", "onnx", SR // 2)  # the STFT runs as a convolution
    wave = fresh_audio(2, SR // 2, seed=7)
    with torch.no_grad():
        ref = model(wave).numpy()
    np.testing.assert_allclose(ExportedModel(result.path)(wave.numpy()), ref, atol=1e-4, rtol=1e-4)


def test_length_dependent_graph_is_exported_fixed_length(tmp_path):
    pytest.importorskip("onnxruntime")
    # AuM sized for exactly the traced length: the trace skips positional interpolation, which
    # another length would need, so the export must be marked (and for ONNX made) fixed-length
    torch.manual_seed(0)
    model = create_model("aum_tiny", 3, d_model=16, d_state=8, depth=2, max_seconds=1.0).eval()
    result = export_model(model, tmp_path / "aum.onnx", "onnx", SR)
    assert not result.dynamic_length and result.max_abs_diff[SR] < 1e-4
    exported = ExportedModel(result.path)
    assert exported.metadata["dynamic_length"] is False
    with pytest.raises(Exception):
        exported(np.zeros((1, SR + SR // 2), np.float32))
    wave = fresh_audio(2, SR, seed=3)
    with torch.no_grad():
        np.testing.assert_allclose(exported(wave.numpy()), model(wave).numpy(), atol=1e-4, rtol=1e-4)


def test_export_cli(tmp_path, capsys):
    path, _ = make_checkpoint(tmp_path / "best.pt")
    assert main(["export", str(path), "--format", "torchscript", "-o", str(tmp_path / "m.ts.pt")]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "any length" in out and (tmp_path / "m.ts.pt").is_file()
    (tmp_path / "broken.pt").write_bytes(b"nope")
    assert main(["export", str(tmp_path / "broken.pt"), "--format", "torchscript"]) == 1
    assert "broken.pt" in capsys.readouterr().err
