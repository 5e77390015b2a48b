"""Datasets over manifests, the DataLoader helper, and :func:`build_datasets` for every task.

Every dataset returns ``(waveform, label)``: a float32 tensor ``(T,)`` with
``T = round(clip_seconds * sample_rate)`` and an int class index, so one collate (stacking) gives
``(B, T)`` for any task. Frontends (mel etc.) belong to the model.

The hot path (:meth:`ClipDataset.__getitem__`) touches only flat numpy arrays built once in
``__init__`` (no per-item dicts or objects; also no Python objects whose reference counts would
un-share forked workers' memory), reads only the frames it needs, and raises
:class:`~helix.data.audio.AudioError` naming the file rather than returning silence.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from helix.data.audio import fit_length, load_audio
from helix.data.manifest import class_names as manifest_classes

__all__ = ["DEFAULT_CLIP_SECONDS", "TASKS", "ClipDataset", "build_dataloader", "build_datasets"]

#: the clip length each task is trained at unless told otherwise (paper, section 4.1)
DEFAULT_CLIP_SECONDS = {
    "esc50": 5.0,
    "urbansound8k": 4.0,
    "speechcommands": 1.0,
    "concat_speechcommands": 10.0,
    "librispeech": 30.0,
    "voxpopuli": 300.0,
}
TASKS = tuple(DEFAULT_CLIP_SECONDS)


class ClipDataset(Dataset):
    """One fixed-length clip per manifest row: item ``i`` -> ``(waveform (T,), label)``.

    Files longer than the clip are cropped -- at a random offset when ``train`` (drawn from the
    torch RNG, which DataLoader seeds per worker), centred otherwise -- and shorter ones are
    zero-padded at the end. Only the cropped part is decoded.
    """

    def __init__(
        self,
        rows: Sequence[dict[str, Any]],
        class_names: Sequence[str],
        clip_seconds: float,
        sample_rate: int = 16000,
        *,
        train: bool = False,
        resample: bool = True,
    ):
        index = {name: i for i, name in enumerate(class_names)}
        unknown = {r["label"] for r in rows} - index.keys()
        if unknown:
            raise ValueError(f"labels {sorted(unknown)[:5]} are not among the {len(index)} class names")
        self.class_names = list(class_names)
        self.clip_seconds = float(clip_seconds)
        self.sample_rate = int(sample_rate)
        self.num_samples = int(round(clip_seconds * sample_rate))
        self.train = train
        self.resample = resample
        # one bytes buffer, not a list of str: forked workers keep sharing it
        self.paths = np.array([os.fsencode(r["path"]) for r in rows], dtype=np.bytes_)
        self.labels = np.array([index[r["label"]] for r in rows], dtype=np.int64)
        self.frames = np.array([r["frames"] for r in rows], dtype=np.int64)
        self.rates = np.array([r["sample_rate"] for r in rows], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        frames, native = int(self.frames[i]), int(self.rates[i])
        want = int(math.ceil(self.clip_seconds * native))
        start = 0
        if frames > want:
            spare = frames - want
            start = int(torch.randint(spare + 1, ())) if self.train else spare // 2
        x = load_audio(
            os.fsdecode(self.paths[i]), self.sample_rate, offset=start / native, duration=self.clip_seconds,
            resample=self.resample, expected_frames=frames,
        )
        return torch.from_numpy(fit_length(x, self.num_samples)), int(self.labels[i])


def build_dataloader(
    dataset: Dataset,
    batch_size: int = 32,
    *,
    shuffle: bool = False,
    num_workers: int = 2,
    pin_memory: bool | None = None,
    persistent_workers: bool | None = None,
    prefetch_factor: int = 4,
    drop_last: bool = False,
    seed: int = 0,
) -> DataLoader:
    """A DataLoader that keeps a GPU fed: worker processes, pinned memory, workers kept alive.

    ``pin_memory`` defaults to "a CUDA device is present". When ``torch.distributed`` is
    initialised, a :class:`DistributedSampler` gives each rank its share; call
    ``loader.sampler.set_epoch(epoch)`` each epoch so shuffling differs between epochs.
    ``seed`` fixes the shuffling order and the per-worker RNG seeds (random crops, Concat picks).
    """
    sampler = None
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
        shuffle = False
    generator = torch.Generator()
    generator.manual_seed(seed)
    workers = max(0, int(num_workers))
    extra = {}
    if workers:
        extra["prefetch_factor"] = prefetch_factor
        extra["persistent_workers"] = True if persistent_workers is None else persistent_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=workers,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        drop_last=drop_last,
        generator=generator,
        **extra,
    )


def _options(name: str, kwargs: dict[str, Any], allowed: dict[str, Any]) -> dict[str, Any]:
    """``allowed`` (the defaults) updated with ``kwargs``; a name not in ``allowed`` is an error."""
    unknown = set(kwargs) - set(allowed)
    if unknown:
        raise ValueError(f"{name} does not take {sorted(unknown)}; it takes {sorted(allowed) or 'no options'}")
    return {**allowed, **kwargs}


def build_datasets(
    name: str,
    root: str | os.PathLike,
    clip_seconds: float | None,
    sample_rate: int = 16000,
    fold: int | None = None,
    **task_kwargs: Any,
) -> tuple[Dataset, Dataset, Dataset, list[str]]:
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

    ``clip_seconds=None`` takes :data:`DEFAULT_CLIP_SECONDS`. Every task also accepts
    ``resample=False``, which refuses files not already at ``sample_rate``.
    Class names are sorted label names found in the manifest; index = class id.
    """
    # derived builds on ClipDataset, and recipes pull in the download code: both imported late
    from helix.data import derived
    from helix.data.recipes import get_recipe

    if name not in TASKS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(TASKS)}")
    seconds = DEFAULT_CLIP_SECONDS[name] if clip_seconds is None else float(clip_seconds)
    if seconds <= 0:
        raise ValueError(f"clip_seconds must be positive, got {clip_seconds}")
    if name in ("esc50", "urbansound8k"):
        opts = _options(name, task_kwargs, {"resample": True})
        rows = get_recipe(name).read_manifest(root)
        return _kfold(rows, fold, seconds, sample_rate, opts["resample"])
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
                                 train=(s == "train"), resample=opts["resample"]) for s in splits]
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


def _refuse_empty(name: str, root, sizes: dict[str, int], may_be_empty: Sequence[str] = ()) -> None:
    """An empty split trains without validation (NaN accuracy, no best checkpoint): refuse it."""
    empty = [s for s, n in sizes.items() if n == 0 and s not in may_be_empty]
    if empty:
        counts = ", ".join(f"{s} {n}" for s, n in sizes.items())
        raise ValueError(f"{name} at {root}: the {' and '.join(empty)} split is empty ({counts} items); "
                         "check the corpus's split lists and run `helix data prepare` again")


def _kfold(rows, fold, seconds, sample_rate, resample):
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
        ClipDataset(split["train"], names, seconds, sample_rate, train=True, resample=resample),
        ClipDataset(split["val"], names, seconds, sample_rate, resample=resample),
        ClipDataset(split["test"], names, seconds, sample_rate, resample=resample),
        names,
    )
