"""Tasks: one :func:`build_task` for the paper's corpora, the derived tasks and the synthetic ones.

A task turns prepared data (a manifest under ``root``; nothing for synthetic tasks) into
``(train, validation, test, class_names)``. Every dataset returns ``(waveform (T,), label)``;
the tasks in :data:`NATIVE_LENGTH_TASKS` can instead keep each clip's own length
(``native_length=True``: cropped only when longer than ``clip_seconds``, never padded).
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

from torch.utils.data import Dataset

from helix.data import derived
from helix.data.dataset import ClipDataset
from helix.data.manifest import class_names as manifest_classes
from helix.data.synthetic import SYNTHETIC_TASKS, build_synthetic_datasets

__all__ = ["CORPUS_TASKS", "TaskOptionError", "DEFAULT_CLIP_SECONDS", "NATIVE_LENGTH_TASKS", "OWN_TASKS", "SYNTHETIC_TASKS", "TASKS", "build_task",
           "suggest_clip_seconds"]

#: the clip length each corpus task is trained at unless told otherwise (paper, section 4.1)
DEFAULT_CLIP_SECONDS = {
    "esc50": 5.0,
    "urbansound8k": 4.0,
    "speechcommands": 1.0,
    "concat_speechcommands": 10.0,
    "librispeech": 30.0,
    "voxpopuli": 300.0,
}
CORPUS_TASKS = tuple(DEFAULT_CLIP_SECONDS)
#: the user's own files (``helix data prepare folder|csv``); clip length from their durations
OWN_TASKS = ("folder", "csv")
TASKS = CORPUS_TASKS + OWN_TASKS + SYNTHETIC_TASKS
#: tasks whose clips are files (one per item) and so can keep their own length; the derived tasks
#: stitch or concatenate several files to ``clip_seconds`` and the synthetic ones are generated at it
NATIVE_LENGTH_TASKS = ("esc50", "urbansound8k", "speechcommands") + OWN_TASKS


def build_task(
    name: str,
    root: str | os.PathLike | None,
    clip_seconds: float | None,
    sample_rate: int = 16000,
    fold: int | None = None,
    native_length: bool = False,
    **task_kwargs: Any,
) -> tuple[Dataset, Dataset | None, Dataset, list[str]]:
    """``(train, validation, test, class_names)`` of task ``name`` prepared in ``root``.

    - ``esc50``, ``urbansound8k``: ``fold`` is the held-out test fold (default: the first);
      validation is the next fold cyclically (ESC-50 fold 5 -> validation fold 1); training
      uses the remaining folds.
    - ``speechcommands``: the official validation/testing lists; 35 words from the data.
    - ``concat_speechcommands``: ``n_clips`` (10) Speech Commands clips of the same split, each
      ``clip_seconds / n_clips`` long, labelled by the first (:mod:`helix.data.derived`).
    - ``librispeech`` (``subset``, default train-clean-100), ``voxpopuli`` (``subset``, default en):
      closed-set speaker identification on same-speaker utterances stitched to ``clip_seconds``;
      per speaker 70% train / 10% validation / 20% test of the utterances (``val_fraction``,
      ``test_fraction``, ``min_utterances``, ``seed`` change that).
    - ``folder``, ``csv``: the user's own files, split as recorded in the manifest (given, or drawn
      at prepare) or by their folds like ESC-50; ``clip_seconds=None`` takes
      :func:`suggest_clip_seconds` of the durations. Multi-label data (``a;b`` labels) gives
      :class:`~helix.data.labels.MultiLabelClipDataset` items: a float32 label vector ``(C,)``.
    - ``synthetic_order``, ``synthetic_concat_order``: generated offline (:mod:`helix.data.synthetic`);
      ``root`` and ``fold`` are ignored.

    ``clip_seconds=None`` takes :data:`DEFAULT_CLIP_SECONDS`. Every corpus task also accepts
    ``resample=False``, which refuses files not already at ``sample_rate``.
    Class names are sorted label names found in the manifest; index = class id.
    ``native_length=True`` (tasks in :data:`NATIVE_LENGTH_TASKS`, else ValueError) gives clips at
    their own length, each dataset with ``sample_counts()`` for a length-bucketed sampler.
    """
    from helix.data.recipes import get_recipe  # recipes pull in the download code: imported late

    if name not in TASKS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(TASKS)}")
    if native_length and name not in NATIVE_LENGTH_TASKS:
        raise ValueError(f"{name} builds every clip at clip_seconds, so it cannot keep native lengths "
                         f"(data.batching=bucket); tasks that can: {', '.join(NATIVE_LENGTH_TASKS)}")
    native = {"native_length": True} if native_length else {}
    if name in SYNTHETIC_TASKS:
        return _synthetic(name, root, clip_seconds, sample_rate, fold, task_kwargs)
    if name in OWN_TASKS:
        return _own(name, root, clip_seconds, sample_rate, fold, _options(name, task_kwargs, {"resample": True}),
                    native)
    seconds = DEFAULT_CLIP_SECONDS[name] if clip_seconds is None else float(clip_seconds)
    if not seconds > 0:
        raise ValueError(f"clip_seconds must be positive, got {clip_seconds}")
    if name in ("esc50", "urbansound8k"):
        opts = _options(name, task_kwargs, {"resample": True})
        rows = get_recipe(name).read_manifest(root)
        return _kfold(rows, fold, seconds, sample_rate, opts["resample"], native=native)
    if fold is not None:
        raise ValueError(f"{name} has one predefined split, not folds (got fold={fold})")
    if name in ("speechcommands", "concat_speechcommands"):
        defaults = {"resample": True} if name == "speechcommands" else {"resample": True, "n_clips": 10, "seed": 0}
        opts = _options(name, task_kwargs, defaults)
        rows = [r for r in get_recipe("speechcommands").read_manifest(root) if r["label"]]
        names = manifest_classes(rows)
        splits = ("train", "validation", "test")
        _refuse_empty(name, root, {s: sum(r["split"] == s for r in rows) for s in splits})
        if name == "speechcommands":
            parts = [ClipDataset([r for r in rows if r["split"] == s], names, seconds, sample_rate,
                                 train=(s == "train"), resample=opts["resample"], **native) for s in splits]
            return (*parts, names)
        parts = [derived.concat_clips([r for r in rows if r["split"] == s], names, seconds, sample_rate,
                                      n_clips=opts["n_clips"], train=(s == "train"), seed=opts["seed"],
                                      resample=opts["resample"]) for s in splits]
        return (*parts, names)
    recipe = get_recipe(name)
    opts = _options(name, task_kwargs, {"subset": recipe.default_subset, "resample": True, "val_fraction": 0.1,
                                           "test_fraction": 0.2, "min_utterances": 3, "seed": 0})
    rows = recipe.read_manifest(root, opts.pop("subset"))
    train, val, test, names = derived.speaker_identification(rows, seconds, sample_rate, **opts)
    # val_fraction=0 asks for no validation part; otherwise every part must hold clips
    sizes = {"train": len(train), "validation": len(val), "test": len(test)}
    _refuse_empty(name, root, sizes, may_be_empty=() if opts["val_fraction"] > 0 else ("validation",))
    return train, val, test, names


class TaskOptionError(ValueError):
    """A task option (``data.task_kwargs`` in a run config) the task does not take, or of the wrong
    type; ``key`` names the option when one is at fault."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


def _options(name: str, kwargs: dict[str, Any], allowed: dict[str, Any]) -> dict[str, Any]:
    """``allowed`` (the defaults) updated with ``kwargs``; a name not in ``allowed`` is an error."""
    unknown = set(kwargs) - set(allowed)
    if unknown:
        raise TaskOptionError(f"{name} does not take {sorted(unknown)}; it takes {sorted(allowed) or 'no options'}")
    return {**allowed, **kwargs}


def _refuse_empty(name: str, root, sizes: dict[str, int], may_be_empty: Sequence[str] = ()) -> None:
    """An empty split trains without validation (NaN accuracy, no best checkpoint): refuse it."""
    empty = [s for s, n in sizes.items() if n == 0 and s not in may_be_empty]
    if empty:
        counts = ", ".join(f"{s} {n}" for s, n in sizes.items())
        raise ValueError(f"{name} at {root}: the {' and '.join(empty)} split is empty ({counts} items); "
                         "check the corpus's split lists and run `helix data prepare` again")


def suggest_clip_seconds(durations: Sequence[float]) -> float:
    """A clip length that holds 90% of the files whole: their 90th-percentile duration rounded up
    to 0.1 s, at most 30 s (longer files are cropped, at random while training)."""
    ordered = sorted(durations)
    p90 = ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]
    return min(30.0, max(0.1, math.ceil(round(p90 * 10, 6)) / 10))


def _own(name, root, clip_seconds, sample_rate, fold, opts, native):
    from helix.data.labels import MultiLabelClipDataset, is_multilabel
    from helix.data.recipes import get_recipe

    rows = get_recipe(name).read_manifest(root)
    seconds = suggest_clip_seconds([r["duration"] for r in rows]) if clip_seconds is None else float(clip_seconds)
    if not seconds > 0:
        raise ValueError(f"clip_seconds must be positive, got {clip_seconds}")
    dataset = MultiLabelClipDataset if is_multilabel(rows) else ClipDataset
    if any(r["fold"] for r in rows):
        return _kfold(rows, fold, seconds, sample_rate, opts["resample"], dataset, native)
    if fold is not None:
        raise ValueError(f"{name} at {root} has one recorded split, not folds (got fold={fold})")
    names = manifest_classes(rows)
    parts = {s: [r for r in rows if r["split"] == s] for s in ("train", "validation", "test")}
    _refuse_empty(name, root, {s: len(p) for s, p in parts.items()})
    return (*(dataset(p, names, seconds, sample_rate, train=(s == "train"), resample=opts["resample"], **native)
              for s, p in parts.items()), names)


def _kfold(rows, fold, seconds, sample_rate, resample, dataset=ClipDataset, native=None):
    native = native or {}
    folds = sorted({r["fold"] for r in rows})
    if fold is None:
        fold = folds[0]
    if fold not in folds:
        raise ValueError(f"fold {fold} is not one of the folds found in the manifest: {folds}")
    if len(folds) < 3:
        raise ValueError(f"need at least 3 folds for train/validation/test, the manifest has {folds}")
    val_fold = folds[(folds.index(fold) + 1) % len(folds)]
    names = manifest_classes(rows)
    split = {"test": [r for r in rows if r["fold"] == fold], "val": [r for r in rows if r["fold"] == val_fold],
             "train": [r for r in rows if r["fold"] not in (fold, val_fold)]}
    return (
        dataset(split["train"], names, seconds, sample_rate, train=True, resample=resample, **native),
        dataset(split["val"], names, seconds, sample_rate, resample=resample, **native),
        dataset(split["test"], names, seconds, sample_rate, resample=resample, **native),
        names,
    )


def _synthetic(name, root, clip_seconds, sample_rate, fold, task_kwargs):
    import inspect

    defaults = {k: p.default for k, p in inspect.signature(build_synthetic_datasets).parameters.items()
                if k not in ("name", "root", "clip_seconds", "sample_rate", "fold")}
    unknown = sorted(set(task_kwargs) - set(defaults))
    if unknown:
        raise TaskOptionError(f"{name} does not take {unknown}; it takes {sorted(defaults)}")
    for key, value in task_kwargs.items():
        # every option is an int or a bool, like its default; anything else would only fail deep
        # inside the generator with a bare TypeError
        if isinstance(defaults[key], (bool, int)) and type(value) is not type(defaults[key]):
            raise TaskOptionError(f"expected {type(defaults[key]).__name__}, got {value!r}", key=key)
    seconds = 1.0 if clip_seconds is None else clip_seconds
    return build_synthetic_datasets(name, root, clip_seconds=seconds, sample_rate=sample_rate, fold=fold,
                                    **task_kwargs)
