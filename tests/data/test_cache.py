"""helix.data.cache: decode-once caching gives the same batches, never a stale cache, the same failures."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch

from helix.data.audio import AudioError, load_audio
from helix.data.cache import cache_datasets
from helix.data.dataset import ClipDataset, build_dataloader
from helix.data.recipes import get_recipe
from helix.data.tasks import build_task

from .corpora import make_esc50, make_speechcommands, write_audio

MODES = ("none", "memory", "disk")


@pytest.fixture
def sc(tmp_path):
    root = make_speechcommands(tmp_path / "sc")
    get_recipe("speechcommands").prepare(root, progress=False)
    return root


def _task(root, mode, name="speechcommands", clip=0.5, **kw):
    parts = build_task(name, root, clip, **kw)
    store = cache_datasets(parts[:3], mode, root / "helix" / "cache", progress=False)
    return parts, store


def _epoch(ds, workers=0, seed=3):
    torch.manual_seed(seed)  # without workers the crops draw from the global RNG (workers: from seed)
    loader = build_dataloader(ds, batch_size=4, shuffle=True, num_workers=workers, seed=seed, pin_memory=False)
    return [(x.clone(), y.clone()) for x, y in loader]


def test_batches_identical_with_cache_none_memory_disk(sc):
    """16-bit 16 kHz files (Speech Commands): the cache is int16 and every batch bit-identical --
    random crops (0.5 s of 1 s files) and zero padding (the 0.6 s files) alike, 0 and 2 workers."""
    for workers in (0, 2):  # two workers: the forked workers read the main process's cache
        reference = None
        for mode in MODES:
            (train, _, test, _), store = _task(sc, mode)
            assert (store is None) == (mode == "none")
            if store is not None:
                assert store.samples.dtype == np.int16  # lossless here: half the memory of float32
            batches = _epoch(train, workers) + _epoch(test, workers)
            reference = reference or batches
            assert len(batches) == len(reference) == 3 + 1
            for (x, y), (x0, y0) in zip(batches, reference):
                assert torch.equal(y, y0) and torch.equal(x, x0), (mode, workers)
    crops = {tuple(x[0, :4].tolist()) for x, _ in reference[:3]}
    assert len(crops) == 3  # the batches do hold random crops


def test_native_length_items_identical(sc):
    items = {}
    for mode in ("none", "memory"):
        (train, _, _, _), _ = _task(sc, mode, clip=0.8, native_length=True)
        torch.manual_seed(0)
        items[mode] = [train[i][0] for i in range(len(train))]
    assert {len(x) for x in items["none"]} == {12800, 9600}  # cropped 1 s files, whole 0.6 s ones
    assert all(torch.equal(a, b) for a, b in zip(items["none"], items["memory"]))


def test_resampled_files(tmp_path):
    """ESC-50 (44.1 kHz -> 16 kHz) is cached as float32: files shorter than the clip (padded) are
    bit-identical; a crop of a longer file is cut from the file resampled once, at the crop's start
    rounded to the target rate."""
    root = make_esc50(tmp_path / "esc50")
    get_recipe("esc50").prepare(root, progress=False)
    padded = {}
    for mode in MODES:
        (train, _, _, _), store = _task(root, mode, name="esc50", clip=1.0)
        padded[mode] = _epoch(train)
        if store is not None:
            assert store.samples.dtype == np.float32
    for mode in ("memory", "disk"):
        assert all(torch.equal(a[0], b[0]) for a, b in zip(padded["none"], padded[mode]))

    (train, _, _, _), _ = _task(root, "memory", name="esc50", clip=0.2)
    path, frames = os.fsdecode(train.paths[0]), int(train.frames[0])
    torch.manual_seed(5)
    x, _ = train[0]
    torch.manual_seed(5)
    start = int(torch.randint(frames - int(np.ceil(0.2 * 44100)) + 1, ()))  # the draw ClipDataset makes
    whole = load_audio(path, 16000)
    at = round(start * 16000 / 44100)
    assert x.shape == (3200,) and torch.equal(x, torch.from_numpy(whole[at : at + 3200]))


def test_float_files_at_the_target_rate_are_stored_as_float32(tmp_path):
    """A 24-bit file does not fit int16 losslessly: the whole cache becomes float32, items exact."""
    rows = []
    for i, subtype in enumerate(("PCM_16", "PCM_24", "PCM_16")):
        p = write_audio(tmp_path / f"{i}.wav", 0.5, 16000, freq=300 + 100 * i, subtype=subtype)
        rows.append({"path": str(p), "label": "a", "frames": 8000, "sample_rate": 16000})
    ds = ClipDataset(rows, ["a"], 0.25)
    expected = [ds[i][0] for i in range(3)]
    for mode in ("memory", "disk"):
        store = cache_datasets([ds], mode, tmp_path / "cache", progress=False)
        assert store.samples.dtype == np.float32
        assert all(torch.equal(ds[i][0], expected[i]) for i in range(3))


def test_disk_cache_is_reused_and_never_stale(sc):
    (train, _, _, _), first = _task(sc, "disk")
    folder = sc / "helix" / "cache"
    made = first.path.stat().st_mtime_ns
    (_, _, _, _), again = _task(sc, "disk")
    assert again.path == first.path and again.path.stat().st_mtime_ns == made  # reused, not rewritten
    assert sorted(p.suffix for p in folder.iterdir()) == [".lock", ".npy", ".npy"]
    # the store pickles as its path (workers started with spawn reopen the memmap, no copy)
    assert len(pickle.dumps(again)) < 10_000 and np.array_equal(pickle.loads(pickle.dumps(again)).samples,
                                                                 again.samples)

    # a file rewritten after the cache was made (same length, other sound): a new cache, new samples
    path = os.fsdecode(train.paths[0])
    sf.write(path, 0.25 * np.ones(int(train.frames[0]), dtype=np.float32), 16000, subtype="PCM_16")
    (train2, _, _, _), fresh = _task(sc, "disk")
    assert fresh.path != first.path
    torch.manual_seed(0)
    x, _ = train2[0]
    assert torch.equal(x, torch.full((8000,), 0.25))


def test_unreadable_file_fails_as_without_cache(sc):
    """A file corrupted after prepare fails when its item is loaded, with the same AudioError,
    whatever the cache -- the cache build itself does not fail, and the other items still load."""
    (train, _, _, _), _ = _task(sc, "none")
    bad = 3
    path = os.fsdecode(train.paths[bad])
    with open(path, "r+b") as f:  # cut the data chunk short: the header promises more than the file holds
        f.truncate(os.path.getsize(path) // 2)
    errors = {}
    for mode in MODES:
        (train, _, _, _), store = _task(sc, mode)
        if store is not None:
            assert store.index[train._cache.entries[bad], 1] == -1
        torch.manual_seed(0)
        with pytest.raises(AudioError) as err:
            for i in range(len(train)):
                train[i]
        errors[mode] = (i, str(err.value))
        assert path in str(err.value)
        torch.manual_seed(0)
        assert train[bad + 1][0].shape == (8000,)
        with pytest.raises(AudioError, match="truncated"):  # through a loader too
            for _ in build_dataloader(train, batch_size=4, num_workers=0, pin_memory=False):
                pass
    assert errors["memory"] == errors["none"] == errors["disk"] and errors["none"][0] == bad


def test_memory_budget_refused_with_size_and_suggestion(sc):
    parts = build_task("speechcommands", sc, 1.0)
    with pytest.raises(ValueError, match=r"18 files, 537\.6 KB as int16 .* exceeds the memory budget of 100\.0 KB"
                                         r".*use data\.cache=disk"):
        cache_datasets(parts[:3], "memory", memory_budget=100_000, progress=False)
    assert parts[0]._cache is None


def test_tasks_without_files_per_item_refuse_a_cache():
    parts = build_task("synthetic_order", None, 0.1, num_train=4, num_val=2, num_test=2, cache=False)
    with pytest.raises(ValueError, match="nothing to decode once; use data.cache=none"):
        cache_datasets(parts[:3], "memory", progress=False)
    with pytest.raises(ValueError, match="data.cache must be one of none, memory, disk"):
        cache_datasets(parts[:3], "ram", progress=False)


def test_run_config_reaches_the_cache(sc):
    """``data.cache`` in a run config: checked, cached by build_run_data beside the manifest, and
    free to change on resume."""
    from helix.training.config import DataConfig
    from helix.training.loaders import build_run_data
    from helix.training.resume import config_changes

    with pytest.raises(ValueError, match="data.cache must be none, memory or disk"):
        DataConfig(cache="ram")
    data = build_run_data(DataConfig(name="speechcommands", root=str(sc), clip_seconds=1.0, cache="disk"))
    assert data.train._cache is not None and data.test._cache.store is data.train._cache.store
    assert any((sc / "helix" / "cache").glob("decoded-16000hz-*.index.npy"))
    assert config_changes({"data": {"cache": "none"}}, {"data": {"cache": "disk"}}) == []
