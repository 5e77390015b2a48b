"""Labels of the user's own corpora: one name per file, or several (multi-label tagging).

In a manifest a multi-label file's ``label`` holds its names sorted and joined by ``;``
(``bird;rain``). A dataset is multi-label when any row holds more than one name; its items then
carry a float32 label vector ``(C,)`` (1 for each of the file's names) instead of a class index.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
import torch

from helix.data.dataset import ClipDataset

__all__ = ["LABEL_SEP", "MultiLabelClipDataset", "case_clashes", "is_multilabel", "join_labels",
           "label_matrix", "split_label"]

LABEL_SEP = ";"


def split_label(label: str) -> list[str]:
    """``"bird; rain"`` -> ``["bird", "rain"]`` (names stripped, empty ones dropped, order kept)."""
    return [name.strip() for name in label.split(LABEL_SEP) if name.strip()]


def join_labels(names: Iterable[str]) -> str:
    """The manifest form: distinct names, sorted, joined by ``;``."""
    return LABEL_SEP.join(sorted(set(names)))


def is_multilabel(rows: Sequence[dict[str, Any]]) -> bool:
    return any(LABEL_SEP in r["label"] for r in rows)


def case_clashes(names: Iterable[str]) -> list[tuple[str, ...]]:
    """Groups of distinct names that differ only in case (``Dog``, ``dog``): almost always one class typed twice."""
    folded: dict[str, set[str]] = {}
    for name in names:
        folded.setdefault(name.casefold(), set()).add(name)
    return [tuple(sorted(v)) for _, v in sorted(folded.items()) if len(v) > 1]


def label_matrix(rows: Sequence[dict[str, Any]], class_names: Sequence[str]) -> np.ndarray:
    """``(N, C)`` float32: ``[i, c] = 1`` where row ``i`` carries class ``c``."""
    index = {name: c for c, name in enumerate(class_names)}
    out = np.zeros((len(rows), len(class_names)), dtype=np.float32)
    for i, r in enumerate(rows):
        for name in split_label(r["label"]):
            if name not in index:
                raise ValueError(f"{r['path']}: label {name!r} is not among the {len(index)} class names")
            out[i, index[name]] = 1.0
    return out


class MultiLabelClipDataset(ClipDataset):
    """:class:`ClipDataset` whose item ``i`` is ``(waveform (T,), label vector (C,) float32)``.

    ``labels`` keeps each file's first class as an index (what samplers and summaries that count
    classes use); ``targets`` ``(N, C)`` is what the model is trained on.
    """

    def __init__(self, rows: Sequence[dict[str, Any]], class_names: Sequence[str], clip_seconds: float,
                 sample_rate: int = 16000, *, train: bool = False, resample: bool = True,
                 native_length: bool = False):
        targets = label_matrix(rows, class_names)
        if len(rows) and not targets.any(axis=1).all():
            empty = next(r["path"] for r, t in zip(rows, targets) if not t.any())
            raise ValueError(f"{empty}: no label")
        first = [{**r, "label": split_label(r["label"])[0]} for r in rows]
        super().__init__(first, class_names, clip_seconds, sample_rate, train=train, resample=resample,
                         native_length=native_length)
        self.targets = targets

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, _ = super().__getitem__(i)
        return x, torch.from_numpy(self.targets[i])
