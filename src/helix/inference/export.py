"""Export a trained model for the reference (CPU) path: TorchScript or ONNX, checked against PyTorch.

The exported graph maps waveforms (B, T) float32 at the checkpoint's sample rate to logits (B, C).
The model is rebuilt in its export mode (:func:`export_twin`: same weights, two construction
options; see :mod:`helix.ops.selective_scan.export` and :class:`helix.frontends.mel.LogMel`):

- the selective scan's autograd Function -> a TorchScript loop over time (``prim::Loop`` in
  TorchScript, an ONNX ``Loop``), so one export serves every batch size and, where the model's
  graph does not depend on the length, every input length;
- the mel frontend's complex STFT (which the TorchScript-based ONNX exporter cannot translate) ->
  the same windowed DFT as a strided real convolution (``mel_stft="conv"``; TorchScript gets the
  same graph, so both formats run the same arithmetic).

ONNX goes through ``torch.onnx.export(..., dynamo=False)`` (TorchScript-based): the dynamo exporter
unrolls Python loops (minutes and a graph of L x layers steps for a 500-token raw model) and, with
``torch.ops.higher_order.scan``, fails on a dynamic batch size in torch 2.13.

Every export is run on seeded random audio and compared with the PyTorch model: at the export length
(batch 2) it must match within tolerance or the export fails; at 1.5x that length (batch 1) a
mismatch only marks the export as fixed-length (recorded in its metadata, and an ONNX export is
then redone with a fixed time axis). Metadata (class names, sample rate, window) travels inside the
file: ``helix.json`` in the TorchScript archive, ``metadata_props["helix"]`` in ONNX.

``lengths=True`` exports ``(wave (B, T), lengths (B,) int64 samples) -> logits``: a padded batch of
clips of different lengths, each scored as if alone (the masked path of ``model(wave, lengths)``);
the check then runs on clips of two lengths, at both test lengths.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from helix.utils.io import atomic_path, check_output

EXPORT_FORMATS = ("torchscript", "onnx", "safetensors", "pretrained")
SUFFIXES = {"torchscript": ".ts.pt", "onnx": ".onnx", "safetensors": ".safetensors", "pretrained": "_pretrained"}
"""Default output: the checkpoint's name with this ending."""
ALLOWED_SUFFIXES = {"torchscript": (".pt", ".pth", ".ts"), "onnx": (".onnx",), "safetensors": (".safetensors",)}
"""What an output file name may end with, per format (``pretrained`` writes a folder)."""
ONNX_OPSET = 17
ATOL, RTOL = 1e-4, 1e-4


def export_twin(model: torch.nn.Module) -> torch.nn.Module:
    """The same network built in its export mode (``scan_backend="export"``, ``mel_stft="conv"``)
    with the same weights, in eval mode; ``model`` itself is left as it is. Every registered model
    takes its config dataclass as its one constructor argument and has both fields."""
    config = getattr(model, "config", None)
    if not dataclasses.is_dataclass(config):
        raise ValueError(f"{type(model).__name__} has no config dataclass; export needs a registered helix model")
    twin = type(model)(dataclasses.replace(config, scan_backend="export", mel_stft="conv"))
    twin.load_state_dict(model.state_dict())
    return twin.eval()


@dataclass
class ExportResult:
    path: Path
    format: str
    num_samples: int
    """Length (samples) the model was traced at: the checkpoint's window."""
    max_abs_diff: dict[int, float]
    """Input length -> largest |exported - PyTorch| over the logits of the random check audio."""
    dynamic_length: bool
    """Whether inputs of other lengths give the PyTorch result (checked at 1.5x the window)."""
    lengths: bool = False
    """Whether the exported graph takes per-clip lengths as a second input."""


class _WithLengths(torch.nn.Module):
    """``model(wave, lengths)`` as a module of two tensor inputs (what tracing needs)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.model(wave, lengths)


class ExportedModel:
    """An exported file loaded for inference: ``model(wave (B, T) float32 ndarray) -> logits (B, C)``;
    an export with lengths also takes ``lengths`` (B,) samples per clip (default: every clip full)."""

    def __init__(self, path: str | os.PathLike, fmt: str | None = None):
        self.path = Path(path)
        self.format = fmt or ("onnx" if self.path.suffix == ".onnx" else "torchscript")
        if self.format == "onnx":
            import onnx
            import onnxruntime

            self.metadata = json.loads({p.key: p.value for p in onnx.load(str(self.path), load_external_data=False)
                                        .metadata_props}.get("helix", "{}"))
            self._session = onnxruntime.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        else:
            extra = {"helix.json": ""}
            with _quiet_jit():
                self._module = torch.jit.load(str(self.path), map_location="cpu", _extra_files=extra)
            self.metadata = json.loads(extra["helix.json"] or "{}")

    @property
    def takes_lengths(self) -> bool:
        return bool(self.metadata.get("lengths", False))

    def __call__(self, wave: np.ndarray, lengths: np.ndarray | None = None) -> np.ndarray:
        wave = np.ascontiguousarray(wave, dtype=np.float32)
        if lengths is not None and not self.takes_lengths:
            raise ValueError(f"{self.path} was exported without lengths; export again with --lengths")
        inputs = {"wave": wave}
        if self.takes_lengths:
            full = np.full(wave.shape[0], wave.shape[1], dtype=np.int64)
            inputs["lengths"] = full if lengths is None else np.ascontiguousarray(lengths, dtype=np.int64)
        if self.format == "onnx":
            return self._session.run(["logits"], inputs)[0]
        with torch.inference_mode():
            return self._module(*(torch.from_numpy(v) for v in inputs.values())).numpy()


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    """torch 2.13 marks torch.jit trace/save/load deprecated (they still work): keep users' logs clean."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*", category=DeprecationWarning)
        yield


def _twin(model: torch.nn.Module, lengths: bool) -> torch.nn.Module:
    twin = export_twin(model)
    return _WithLengths(twin).eval() if lengths else twin


def _trace(model: torch.nn.Module, example: tuple) -> torch.jit.ScriptModule:
    model = _twin(model, len(example) == 2)
    with torch.no_grad(), _quiet_jit(), warnings.catch_warnings():
        # shape checks in Python become constants of the trace; the check below is what matters
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace(model, example, check_trace=False)


def _export_onnx(model, example: tuple, path: Path, dynamic_length: bool, metadata: dict) -> None:
    import onnx

    axes = {"wave": {0: "batch", 1: "samples"} if dynamic_length else {0: "batch"}, "logits": {0: "batch"}}
    names = ["wave"]
    if len(example) == 2:
        axes["lengths"], names = {0: "batch"}, ["wave", "lengths"]
    model = _twin(model, len(example) == 2)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings and the TorchScript-exporter deprecation notice
        torch.onnx.export(model, example, str(path), dynamo=False, input_names=names,
                          output_names=["logits"], dynamic_axes=axes, opset_version=ONNX_OPSET)
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "helix", json.dumps({**metadata, "dynamic_length": dynamic_length})
    onnx.save(proto, str(path))


def _compare(model: torch.nn.Module, exported: ExportedModel, wave: torch.Tensor,
             lengths: torch.Tensor | None = None) -> tuple[float, bool]:
    """(max |diff|, within tolerance) of exported vs PyTorch logits on ``wave`` (B, T) [+ lengths]."""
    with torch.inference_mode():
        ref = model(wave, lengths).float().numpy()
    try:
        out = exported(wave.numpy(), None if lengths is None else lengths.numpy())
    except Exception:  # a fixed-shape graph refuses another length outright
        return math.inf, False
    if out.shape != ref.shape:
        return math.inf, False
    diff = float(np.abs(out - ref).max())
    return diff, bool(np.allclose(out, ref, atol=ATOL, rtol=RTOL))


def export_model(model: torch.nn.Module, path: str | os.PathLike, fmt: str, num_samples: int,
                 metadata: dict | None = None, seed: int = 0, inputs: tuple = (), lengths: bool = False) -> ExportResult:
    """Export ``model`` (waveforms (B, num_samples) -> logits) to ``path`` and check it (module docstring).

    The file is built and checked under a temporary name and only then renamed to ``path``, so a
    failed export leaves ``path`` as it was; ``path`` must not be one of ``inputs``.
    """
    if fmt not in ("torchscript", "onnx"):
        raise ValueError(f"export_model writes torchscript or onnx, got {fmt!r}")
    model = model.cpu().eval()
    gen = torch.Generator().manual_seed(seed)
    example = 0.1 * torch.randn(2, num_samples, generator=gen)  # (B, T) random audio
    longer = 0.1 * torch.randn(1 + lengths, num_samples * 3 // 2, generator=gen)

    def clips(wave):  # with lengths: the first clip full, the second 5/8 of it (zero-padded)
        if not lengths:
            return wave, None
        n = torch.tensor([wave.shape[1], max(wave.shape[1] * 5 // 8, int(getattr(model, "min_samples", 1)))])
        return wave * (torch.arange(wave.shape[1]) < n[:, None]), n

    example, example_lengths = clips(example)
    longer, longer_lengths = clips(longer)
    metadata = {**(metadata or {}), "format": fmt, "input": "wave (batch, samples) float32"
                + (", lengths (batch,) int64 samples per clip" if lengths else ""),
                "output": "logits (batch, classes)", "traced_samples": num_samples, "lengths": lengths}
    trace_inputs = (example,) if not lengths else (example, example_lengths)
    traced = _trace(model, trace_inputs) if fmt == "torchscript" else None
    with atomic_path(path, inputs, what=f"{fmt} export") as tmp:

        def save(dynamic: bool) -> None:
            if traced is not None:
                extra = {"helix.json": json.dumps({**metadata, "dynamic_length": dynamic})}
                with _quiet_jit():
                    torch.jit.save(traced, str(tmp), _extra_files=extra)
            else:
                _export_onnx(model, trace_inputs, tmp, dynamic, metadata)

        save(True)
        diff, ok = _compare(model, ExportedModel(tmp, fmt), example, example_lengths)
        if not ok:
            raise RuntimeError(f"exported {fmt} model differs from PyTorch by {diff:.3g} (> atol {ATOL} + rtol "
                               f"{RTOL}) at {num_samples} samples; nothing was written")
        diffs = {num_samples: diff}
        diffs[longer.shape[1]], dynamic = _compare(model, ExportedModel(tmp, fmt), longer, longer_lengths)
        if not dynamic:
            save(False)  # record (and for ONNX, enforce) that only the traced length is valid
    return ExportResult(Path(path), fmt, num_samples, diffs, dynamic, lengths)


def default_output(checkpoint: str | os.PathLike, fmt: str) -> Path:
    """``runs/x/best.pt`` -> ``runs/x/best.onnx`` (``.ts.pt``, ``.safetensors``, ``best_pretrained/``)."""
    ckpt = Path(checkpoint)
    stem = ckpt.name.rsplit(".", 1)[0] if ckpt.suffix else ckpt.name
    return ckpt.with_name(stem + SUFFIXES[fmt])


def check_export_output(out: Path, fmt: str, inputs: tuple) -> None:
    """Refuse an output whose name does not fit ``fmt``, that is an input, or of the wrong kind."""
    name = out.name.lower()
    if fmt == "pretrained":
        known = tuple(s for suffixes in ALLOWED_SUFFIXES.values() for s in suffixes)
        if name.endswith(known):
            raise ValueError(f"--format pretrained writes a folder (config.json + model.safetensors), but {out} "
                             f"has a file suffix; give a folder name")
        check_output(out, inputs, what="model folder", folder=True)
        return
    check_output(out, inputs, what=f"{fmt} export")
    if not name.endswith(ALLOWED_SUFFIXES[fmt]):
        raise ValueError(f"--format {fmt} writes {' / '.join(ALLOWED_SUFFIXES[fmt])} files, but the output is {out}; "
                         f"name it e.g. {out.with_name(out.name.rsplit('.', 1)[0] + SUFFIXES[fmt])}")


def export_checkpoint(checkpoint: str | os.PathLike, fmt: str = "torchscript",
                      out: str | os.PathLike | None = None, window_seconds: float | None = None,
                      lengths: bool = False) -> ExportResult:
    """Export a checkpoint's model; ``out`` defaults to the checkpoint path with the format's ending.

    ``safetensors`` and ``pretrained`` write the weights (no pickle, no code) with the model's
    description as metadata / ``config.json``; ``helix.load`` reads them back. ``lengths``: the
    TorchScript/ONNX graph also takes per-clip lengths (:func:`export_model`).
    """
    from helix.version import __version__
    from helix.inference.predict import build_predictor
    from helix.models.checkpoint import load_model_file, save_pretrained, save_safetensors

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export format must be one of {EXPORT_FORMATS}, got {fmt!r}")
    if lengths and fmt in ("safetensors", "pretrained"):
        raise ValueError(f"--lengths applies to torchscript and onnx graphs; --format {fmt} writes weights only")
    ckpt_path = Path(checkpoint)
    out = Path(out) if out is not None else default_output(ckpt_path, fmt)
    inputs = (ckpt_path,)
    check_export_output(out, fmt, inputs)  # before the checkpoint is even read
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as err:
            raise RuntimeError(f"ONNX export needs onnx and onnxruntime ({err}); "
                               "install them with `pip install helix-audio[export]`") from None
    ckpt = load_model_file(ckpt_path)
    predictor = build_predictor(ckpt, ckpt_path)  # proves the weights fit the model they describe
    window, _ = predictor.window(window_seconds)
    if fmt in ("safetensors", "pretrained"):
        (save_safetensors if fmt == "safetensors" else save_pretrained)(out, ckpt, inputs)
        return ExportResult(out, fmt, window, {}, True)
    metadata = {"helix_version": __version__, "checkpoint": str(ckpt_path), "class_names": predictor.class_names,
                "sample_rate": predictor.sample_rate, "window_seconds": window / predictor.sample_rate}
    return export_model(predictor.model, out, fmt, window, metadata, inputs=inputs, lengths=lengths)
