"""Inference with a trained checkpoint: ``helix.load("run/best.pt").predict("clip.wav")``.

A checkpoint carries everything needed: the model's registry name and options, its weights, the
class names, the sample rate and the training clip length. Audio of any length is cut into sliding
windows (:mod:`helix.inference.windows`; default window = the training clip, hop = half of it),
windows are scored in batches, and the file-level prediction is the **mean over windows of the
softmax probabilities** (every window weighs the same). Audio shorter than one window is one
shorter window: the model is told its length (``model(wave, lengths)``), so it is scored as that
audio alone, not with zero padding. A multi-label checkpoint (tagging) scores
each class with its own sigmoid instead; the file keeps every label whose mean probability reaches
a threshold (default 0.5). Files are decoded block by block, so an
hour-long recording needs no more memory than a few windows.

Shapes: waveform ``(T,)`` or ``(C, T)`` (channels are averaged); windows ``(B, T_w)``;
probabilities ``(C,)`` per file, ``(n_windows, C)`` per window.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from helix.data.audio import RESAMPLE_QUALITY, AudioError, iter_audio_blocks
from helix.inference.windows import WindowedResult, resolve_window, run_windows
from helix.models.checkpoint import CheckpointError, load_model_file
from helix.models.loading import build_model

SILENCE_PEAK = 1e-4
"""Peak amplitude below which a file counts as silent (-80 dBFS): predicted, with a warning."""
BLOCK_SECONDS = 30.0
"""Decoding block length: bounds memory for long files, large enough to amortise file reads."""
DEFAULT_BATCH_SIZE = 8


@dataclass
class WindowScore:
    """One window of a timeline: [start, end) in seconds and its class probabilities (C,)."""

    start: float
    end: float
    probs: np.ndarray


@dataclass
class Prediction:
    """File-level prediction: mean window probability per class, top-k labels, optional timeline."""

    source: str
    """The file path, or ``<waveform>`` for an array."""
    duration: float
    """Seconds of audio (at the model's rate)."""
    probs: np.ndarray
    """(C,) mean over windows of the softmax probabilities (per-class sigmoids when ``multilabel``)."""
    class_names: list[str]
    num_windows: int
    top_k: int = 5
    timeline: list[WindowScore] | None = None
    warnings: list[str] = field(default_factory=list)
    multilabel: bool = False
    """The model tags: any number of labels per file, each with its own probability."""
    threshold: float = 0.5
    """Probability at or above which a multi-label prediction keeps a label."""

    @property
    def tags(self) -> list[tuple[str, float]]:
        """(label, probability) of every class at or above ``threshold``, most probable first."""
        from helix.core.multilabel import labels_above

        return labels_above(self.probs[None], self.class_names, self.threshold)[0]

    @property
    def top(self) -> list[tuple[str, float]]:
        """The ``top_k`` most probable (label, probability) pairs, most probable first."""
        return top_labels(self.probs, self.class_names, self.top_k)

    @property
    def label(self) -> str:
        return self.top[0][0]

    def to_dict(self) -> dict:
        out = {"file": self.source, "duration": round(self.duration, 4), "windows": self.num_windows,
               "top": [{"label": k, "prob": round(p, 6)} for k, p in self.top], "warnings": list(self.warnings)}
        if self.multilabel:
            out["threshold"] = self.threshold
            out["labels"] = [{"label": k, "prob": round(p, 6)} for k, p in self.tags]
        if self.timeline is not None:
            out["timeline"] = [{"start": round(w.start, 4), "end": round(w.end, 4),
                                "top": [{"label": k, "prob": round(p, 6)}
                                        for k, p in top_labels(w.probs, self.class_names, self.top_k)]}
                               for w in self.timeline]
        return out


@dataclass
class Failure:
    """An input that could not be used; ``error`` says why and names the file."""

    source: str
    error: Exception

    def to_dict(self) -> dict:
        return {"file": self.source, "error": str(self.error)}


def top_labels(probs: np.ndarray, names: list[str], k: int) -> list[tuple[str, float]]:
    """The ``k`` most probable (name, probability) pairs of ``probs`` (C,), most probable first."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [(names[i], float(probs[i])) for i in order]


class Predictor:
    """A trained model ready for inference; build it with :func:`load_predictor` / ``helix.load``."""

    def __init__(self, model: torch.nn.Module, class_names: list[str], sample_rate: int,
                 clip_seconds: float | None, device: str | torch.device = "cpu",
                 batch_size: int = DEFAULT_BATCH_SIZE, checkpoint: str | None = None, multilabel: bool = False):
        if len(class_names) == 0:
            raise ValueError("a predictor needs at least one class name")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.class_names = list(class_names)
        self.sample_rate = int(sample_rate)
        self.clip_seconds = clip_seconds
        self.batch_size = int(batch_size)
        self.checkpoint = checkpoint
        self.multilabel = bool(multilabel)
        # full batches of full windows (the shape that repeats through a long file or many clips)
        # replay a CUDA graph per output kind: one launch instead of ~500 per batch
        self._graphs: dict[str, object] = {}
        self.cuda_graphs = True
        """Replay full batches from CUDA graphs on a GPU (False: every batch eagerly)."""

    def __repr__(self) -> str:
        return (f"Predictor({type(self.model).__name__}, {len(self.class_names)} classes, "
                f"{self.sample_rate} Hz, window {self.clip_seconds} s, device={self.device})")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def window(self, window_seconds: float | None = None, hop_seconds: float | None = None) -> tuple[int, int]:
        """(window, hop) in samples; defaults: training clip length, 50% overlap."""
        if window_seconds is None and self.clip_seconds is None:
            raise ValueError("this checkpoint does not record its training clip length; pass a window length")
        return resolve_window(window_seconds, hop_seconds, self.clip_seconds or 0.0, self.sample_rate,
                              getattr(self.model, "min_samples", 1))

    # ---------------------------------------------------------------- prediction
    def predict(self, audio, *, top_k: int = 5, window_seconds: float | None = None,
                hop_seconds: float | None = None, timeline: bool = False,
                sample_rate: int | None = None, threshold: float = 0.5) -> Prediction:
        """Predict one file path or waveform ((T,) or (C, T); ``sample_rate`` defaults to the model's).

        Raises AudioError / ValueError for unusable input; warns (and still predicts) on silence.
        """
        (result,) = self.predict_many([audio], top_k=top_k, window_seconds=window_seconds,
                                      hop_seconds=hop_seconds, timeline=timeline, sample_rate=sample_rate,
                                      threshold=threshold)
        if isinstance(result, Failure):
            raise result.error
        for message in result.warnings:
            warnings.warn(message, stacklevel=2)
        return result

    def predict_many(self, inputs: Iterable, *, top_k: int = 5, window_seconds: float | None = None,
                     hop_seconds: float | None = None, timeline: bool = False, sample_rate: int | None = None,
                     progress=None, threshold: float = 0.5) -> Iterator[Prediction | Failure]:
        """One :class:`Prediction` or :class:`Failure` per input, in order; windows batch across inputs.
        ``threshold`` picks a multi-label model's labels (:attr:`Prediction.tags`)."""
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        top_k = min(top_k, self.num_classes)
        for res in self.run(inputs, "probs", window_seconds, hop_seconds, timeline, sample_rate, progress):
            if res.error is not None:
                yield Failure(str(res.key), res.error)
                continue
            probs = (res.sums["probs"] / res.count).astype(np.float32)
            line = None
            if timeline:
                line = [WindowScore(s / self.sample_rate, (s + n) / self.sample_rate, p)
                        for s, n, p in zip(res.starts, res.lengths, res.per_window["probs"])]
            yield Prediction(str(res.key), res.num_samples / self.sample_rate, probs, self.class_names,
                             res.count, top_k, line, self.notes(res), self.multilabel, threshold)

    def notes(self, res: WindowedResult) -> list[str]:
        """Warnings about a source that was still processed (currently: silence)."""
        if res.peak < SILENCE_PEAK:
            return [f"{res.key}: silent audio (peak {res.peak:.1e}, below -80 dBFS); the prediction "
                    "reflects the model's bias, not the recording"]
        return []

    # ---------------------------------------------------------------- embeddings
    def embed(self, audio, *, per_window: bool = False, window_seconds: float | None = None,
              hop_seconds: float | None = None, sample_rate: int | None = None) -> np.ndarray:
        """Pooled embedding of one input: (D,) mean over windows, or (n_windows, D) with ``per_window``."""
        from helix.inference.embed import embed_many

        (result,) = embed_many(self, [audio], per_window=per_window, window_seconds=window_seconds,
                               hop_seconds=hop_seconds, sample_rate=sample_rate)
        if isinstance(result, Failure):
            raise result.error
        for message in result.warnings:
            warnings.warn(message, stacklevel=2)
        return result.windows if per_window else result.vector

    # ---------------------------------------------------------------- engine
    def run(self, inputs: Iterable, output: str, window_seconds: float | None = None,
            hop_seconds: float | None = None, keep_windows: bool = False, sample_rate: int | None = None,
            progress=None) -> Iterator[WindowedResult]:
        """Window, batch and score ``inputs``; ``output`` is "probs" (softmax, or per-class sigmoid
        for a multi-label model) or "embedding" (pooled).

        ``progress(seconds)`` is called as audio is decoded.
        """
        if output not in ("probs", "embedding"):
            raise ValueError(f"output must be 'probs' or 'embedding', got {output!r}")
        window, hop = self.window(window_seconds, hop_seconds)
        sources = (self._source(item, i, sample_rate) for i, item in enumerate(inputs))
        report = None if progress is None else (lambda n: progress(n / self.sample_rate))
        return run_windows(self._forward(output), sources, window, hop, self.batch_size, keep_windows, report,
                           masked=True)

    def _forward(self, output: str):
        model, device = self.model, self.device

        # audio shorter than the model's shortest input keeps just enough of its zero padding
        shortest = int(getattr(model, "min_samples", 1))

        def forward(x: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
            n = torch.from_numpy(np.maximum(lengths, shortest))  # (B,) real samples per window
            full = bool((n >= x.shape[1]).all())
            with torch.inference_mode():
                # a batch of short windows is cut to its longest: no compute spent on padding
                wave = torch.from_numpy(x[:, :int(n.max())]).to(device)  # (B, T_w)
                lens = None if full else n  # all full: the unmasked path
                if full and device.type == "cuda" and self.cuda_graphs:
                    out = self._captured(output)(wave)
                else:
                    out = self._outputs(output, wave, lens)
            out = out.cpu().numpy()  # rows with NaN/inf fail their own file (run_windows)
            return {output: out}

        return forward

    def _outputs(self, output: str, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) -> class probabilities (B, C) or pooled features (B, D), float32."""
        if output == "probs":
            logits = self.model(wave, lengths).float()  # (B, C)
            return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=-1)
        return self.model.forward_features(wave, lengths).float()  # (B, D)

    def _captured(self, output: str):
        """:meth:`_outputs` of unmasked batches replayed from CUDA graphs (one per batch shape,
        captured on a shape's second batch; the output is copied to the host before the next)."""
        if output not in self._graphs:
            from helix.core.graphs import CapturedStep

            self._graphs[output] = CapturedStep(lambda wave: self._outputs(output, wave), warmup=1)
        return self._graphs[output]

    def _source(self, item, index: int, sample_rate: int | None):
        if isinstance(item, (str, os.PathLike)):
            if sample_rate is not None:
                raise ValueError("sample_rate applies to waveforms; files carry their own rate")
            return str(item), self._file_blocks(Path(item))
        return "<waveform>" if index == 0 else f"<waveform {index}>", self._array_blocks(item, sample_rate)

    def _file_blocks(self, path: Path) -> Iterator[np.ndarray]:
        for block in iter_audio_blocks(path, BLOCK_SECONDS, self.sample_rate):
            if not np.isfinite(block).all():
                raise AudioError(path, "contains NaN or infinite samples")
            yield block

    def _array_blocks(self, wave, sample_rate: int | None) -> Iterator[np.ndarray]:
        if isinstance(wave, torch.Tensor):
            wave = wave.detach().cpu().numpy()
        x = np.asarray(wave, dtype=np.float32)
        if x.ndim == 2:
            x = x.mean(axis=0)  # (C, T) -> (T,)
        if x.ndim != 1:
            raise ValueError(f"waveform must be (T,) or (C, T), got shape {x.shape}")
        if x.size == 0:
            raise ValueError("waveform is empty")
        if not np.isfinite(x).all():
            raise ValueError("waveform contains NaN or infinite samples")
        if sample_rate is not None and sample_rate != self.sample_rate:
            import soxr

            x = soxr.resample(x, sample_rate, self.sample_rate, quality=RESAMPLE_QUALITY).astype(np.float32)
        yield x


def load_predictor(checkpoint: str | os.PathLike, device: str | torch.device = "cpu",
                   batch_size: int = DEFAULT_BATCH_SIZE) -> Predictor:
    """Rebuild the model a checkpoint describes and wrap it for inference.

    ``checkpoint`` is a ``.pt`` checkpoint, a helix ``.safetensors`` file or a ``save_pretrained``
    folder (:func:`helix.models.checkpoint.load_model_file`); none of them can run code when read.
    Raises :class:`CheckpointError` (one line, naming the file) when it is missing, corrupted, unsafe,
    from another format, or describes a model this helix cannot build or load the weights into.
    """
    path = Path(checkpoint)
    return build_predictor(load_model_file(path), path, device, batch_size)


def build_predictor(ckpt: dict, path: str | os.PathLike, device: str | torch.device = "cpu",
                    batch_size: int = DEFAULT_BATCH_SIZE) -> Predictor:
    """:func:`load_predictor` for a checkpoint dict already read from ``path`` (named in errors)."""
    loaded = build_model(ckpt, path)
    return Predictor(loaded.model, loaded.class_names, loaded.sample_rate, loaded.clip_seconds, device,
                     batch_size, str(path), multilabel=loaded.multilabel)
