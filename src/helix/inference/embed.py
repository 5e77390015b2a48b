"""Pooled embeddings from a trained model, for files or windows, written as NumPy or JSON.

A window's embedding is the model's ``forward_features`` (the pooled vector the classifier head
reads, (D,)); a file's embedding is the mean of its windows' embeddings (windows placed as for
prediction). Embeddings are not normalised here; cosine scoring (:mod:`helix.inference.verify`)
normalises them.

Output layouts:
- JSON: ``{"checkpoint", "dim", "window_seconds", "hop_seconds", "embeddings": [...], "failures": [...]}``
  with one entry per file: ``{"file", "duration", "embedding": [D floats]}`` or, per window,
  ``{"file", "duration", "windows": [{"start", "end", "embedding"}]}``.
- NumPy: a folder with one ``.npy`` per file, (D,) or (n_windows, D) float32, and ``index.json``
  mapping each input file to its ``.npy`` (and, per window, the window times in seconds).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from helix.utils.io import atomic_write, check_output
from helix.inference.predict import Failure, Predictor

@dataclass
class Embedding:
    """Embedding of one input: ``vector`` (D,) mean over windows; ``windows`` (n, D) when kept."""

    source: str
    duration: float
    vector: np.ndarray
    windows: np.ndarray | None = None
    """(n_windows, D) per-window embeddings (``per_window=True``)."""
    times: list[tuple[float, float]] | None = None
    """(start, end) seconds of each window (``per_window=True``)."""
    warnings: list[str] = field(default_factory=list)


def embed_many(predictor: Predictor, inputs: Iterable, *, per_window: bool = False,
               window_seconds: float | None = None, hop_seconds: float | None = None,
               sample_rate: int | None = None, progress=None) -> Iterator[Embedding | Failure]:
    """One :class:`Embedding` or :class:`Failure` per input, in order (windows batch across inputs)."""
    sr = predictor.sample_rate
    for res in predictor.run(inputs, "embedding", window_seconds, hop_seconds, per_window, sample_rate,
                             progress):
        if res.error is not None:
            yield Failure(str(res.key), res.error)
            continue
        vector = (res.sums["embedding"] / res.count).astype(np.float32)  # (D,)
        windows = times = None
        if per_window:
            windows = np.stack(res.per_window["embedding"]).astype(np.float32)  # (n, D)
            times = [(s / sr, (s + n) / sr) for s, n in zip(res.starts, res.lengths)]
        yield Embedding(str(res.key), res.num_samples / sr, vector, windows, times, predictor.notes(res))


def embeddings_to_json(results: list[Embedding], failures: list[Failure], meta: dict) -> dict:
    """The JSON document described in the module docstring."""
    entries = []
    for e in results:
        entry = {"file": e.source, "duration": round(e.duration, 4)}
        if e.windows is not None:
            entry["windows"] = [{"start": round(a, 4), "end": round(b, 4), "embedding": w.tolist()}
                                for (a, b), w in zip(e.times, e.windows)]
        else:
            entry["embedding"] = e.vector.tolist()
        entries.append(entry)
    dim = int(results[0].vector.shape[0]) if results else None
    return {**meta, "dim": dim, "embeddings": entries, "failures": [f.to_dict() for f in failures]}


def npy_name(source: str, used: set[str]) -> str:
    """A unique, readable file name for ``source``'s array: its path with separators as '__'."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "__", os.path.splitext(source.lstrip("./"))[0]).strip("_") or "audio"
    name, n = f"{stem}.npy", 1
    while name in used:
        n += 1
        name = f"{stem}-{n}.npy"
    used.add(name)
    return name


def write_npy_folder(folder: str | os.PathLike, results: list[Embedding], failures: list[Failure],
                     meta: dict, inputs: Iterable = ()) -> Path:
    """Write one .npy per embedding plus ``index.json`` (last) into ``folder``, each file atomically
    and never over one of ``inputs``; returns the index path."""
    inputs = list(inputs)
    folder = check_output(folder, inputs, what="embedding folder", folder=True)
    folder.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    index = []
    for e in results:
        name = npy_name(e.source, used)
        with atomic_write(folder / name, "wb", inputs) as f:
            np.save(f, e.windows if e.windows is not None else e.vector)
        entry = {"file": e.source, "npy": name, "duration": round(e.duration, 4)}
        if e.times is not None:
            entry["windows"] = [[round(a, 4), round(b, 4)] for a, b in e.times]
        index.append(entry)
    dim = int(results[0].vector.shape[0]) if results else None
    doc = {**meta, "dim": dim, "files": index, "failures": [f.to_dict() for f in failures]}
    path = folder / "index.json"
    with atomic_write(path, "w", inputs) as f:
        f.write(json.dumps(doc, indent=1) + "\n")
    return path
