"""Decode-once cache (``data.cache``): every file of a small corpus decoded and resampled once.

At one-second clips a GPU step can ask for ~2,500 clips/s; decoding and resampling each of them
every epoch is wasted work when the whole corpus fits in memory. :func:`cache_datasets` decodes
every distinct file of some :class:`~helix.data.dataset.ClipDataset` s once (the same
:func:`~helix.data.audio.load_audio` call as without a cache, whole file, at the target rate) into
one flat array ``samples (S,)`` plus ``index (N, 2)`` = ``[offset, length]`` per file, and hands
each dataset a :class:`CachedClips` view. Crops, padding and everything after them stay in
:meth:`ClipDataset.__getitem__`, drawing the same random numbers as without a cache.

- ``memory``: a numpy array built in the main process before DataLoader workers fork, so every
  worker reads the same pages (a flat array holds no Python objects whose reference counts would
  copy them). Refused when it would take more than half the machine's RAM (all ranks together).
- ``disk``: the same array as ``.npy`` files under ``cache_dir`` (``<root>/helix/cache``), opened
  as a read-only memmap and reused by later runs. The file name is a hash of every file's path,
  manifest frames and rate, size and mtime, the target rate and ``resample``: a corpus that
  changed gets a new cache, never a stale one.

Storage is int16 when that is lossless -- every file already at the target rate and every decoded
sample a multiple of 1/32768 (16-bit PCM, e.g. Speech Commands) -- and float32 otherwise, so a
cached sample always equals the decoded one: with a fixed seed the batches of an epoch are
bit-identical with and without the cache. One exception: a file at another rate that is longer
than the clip is resampled whole once and cropped at the target rate (the crop's start rounded to
the nearest target sample), where the uncached path resamples only the crop; the two differ by that
sub-sample shift and the resampler's edge effects at the crop's ends.

A file that cannot be decoded is marked (length -1) and read from disk again on every access, so it
fails exactly as without a cache: an :class:`~helix.data.audio.AudioError` naming it, raised when
its item is loaded.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

import numpy as np
from torch.utils.data import Dataset
from tqdm import tqdm

from helix.data.audio import load_audio
from helix.data.dataset import ClipDataset
from helix.utils.io import atomic_path

__all__ = ["CACHE_MODES", "CachedClips", "DecodedStore", "cache_datasets", "clip_datasets", "machine_memory"]

CACHE_MODES = ("none", "memory", "disk")
FORMAT_VERSION = 1
"""Part of every disk cache's key: a change to what is stored retires older files."""
INT16_SCALE = 32768.0
BAD = -1
"""``index[j, 1]`` of a file that could not be decoded: read from disk (and fail) on every access."""
CHUNK = 512
"""Files decoded per batch of thread-pool work (bounds the decoded arrays waiting to be copied)."""


class DecodedStore:
    """Decoded files one after another: ``samples (S,)`` int16 (x 1/32768) or float32 at
    ``sample_rate``, ``index (N, 2)`` int64 ``[offset, length]`` (length :data:`BAD`: undecodable).
    A disk store pickles as its path (spawned workers reopen the memmap instead of copying it)."""

    def __init__(self, samples: np.ndarray, index: np.ndarray, sample_rate: int, path: Path | None = None):
        self.samples, self.index, self.sample_rate, self.path = samples, index, int(sample_rate), path

    @property
    def nbytes(self) -> int:
        return int(self.samples.nbytes)

    def read(self, j: int, start: int, count: int) -> np.ndarray | None:
        """float32 ``(<= count,)``: file ``j`` from sample ``start`` on; None for an undecodable file."""
        offset, length = self.index[j]
        if length == BAD:
            return None
        lo = offset + min(start, length)
        seg = self.samples[lo : offset + min(length, start + count)]
        if seg.dtype == np.int16:
            return np.multiply(seg, np.float32(1 / INT16_SCALE), dtype=np.float32)  # exact: a power of two
        return np.array(seg, dtype=np.float32)  # a copy: a memmap's pages are read-only

    def __getstate__(self):
        state = dict(self.__dict__)
        if self.path is not None:
            state["samples"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.samples is None:
            self.samples = np.load(self.path, mmap_mode="r")


class CachedClips:
    """One dataset's view of a :class:`DecodedStore`: item ``i`` is file ``entries[i]``."""

    def __init__(self, store: DecodedStore, entries: np.ndarray):
        self.store, self.entries = store, np.asarray(entries, dtype=np.int64)

    def read(self, i: int, start: int, native_rate: int, count: int) -> np.ndarray | None:
        """Item ``i`` from native frame ``start`` on, at the store's rate, at most ``count`` samples."""
        rate = self.store.sample_rate
        at = start if native_rate == rate else int(round(start * rate / native_rate))
        return self.store.read(int(self.entries[i]), at, count)


def clip_datasets(datasets: Iterable[Dataset]) -> list[ClipDataset]:
    """The distinct :class:`ClipDataset` s inside ``datasets`` (through ``Subset`` s and the
    datasets that wrap one as ``base``, e.g. Concat Speech Commands)."""
    found, todo = [], list(datasets)
    while todo:
        ds = todo.pop()
        if isinstance(ds, ClipDataset):
            if not any(ds is f for f in found):
                found.append(ds)
        elif ds is not None:
            todo += [getattr(ds, a) for a in ("dataset", "base") if isinstance(getattr(ds, a, None), Dataset)]
            todo += list(getattr(ds, "datasets", ()))
    return found


def machine_memory() -> int:
    """Bytes of RAM this process may use: the physical memory, or a smaller cgroup limit."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError):
            total = min(total, int(Path(limit).read_text().strip()))
    return total


def cache_datasets(
    datasets: Iterable[Dataset],
    mode: str,
    cache_dir: str | os.PathLike | None = None,
    *,
    memory_budget: int | None = None,
    progress: bool | None = None,
    threads: int | None = None,
) -> DecodedStore | None:
    """Decode every distinct file of the ClipDatasets in ``datasets`` once and attach the cache.

    ``mode``: one of :data:`CACHE_MODES` (``none`` does nothing and returns None). ``cache_dir``
    (``disk`` only) holds the cache files. ``memory_budget`` (``memory`` only; bytes, all ranks of
    this machine together, default half of :func:`machine_memory`) refuses a larger cache with a
    ValueError. ``progress`` (default: on rank 0) shows a bar with clips/s and ETA and one summary
    line on stderr. ``threads`` decode in parallel (default: the usable cores, at most 8).
    """
    if mode not in CACHE_MODES:
        raise ValueError(f"data.cache must be one of {', '.join(CACHE_MODES)}, got {mode!r}")
    if mode == "none":
        return None
    found = clip_datasets(datasets)
    if not found:
        raise ValueError(f"data.cache={mode}: this task's clips are not read one file per item (stitched or "
                         "generated), so there is nothing to decode once; use data.cache=none")
    rate, resample = found[0].sample_rate, found[0].resample
    if any(d.sample_rate != rate or d.resample != resample for d in found):
        raise ValueError(f"data.cache={mode}: the datasets disagree on sample_rate/resample; cache them separately")
    progress = os.environ.get("RANK", "0") == "0" if progress is None else progress
    plan = _Plan(found, rate, resample)
    if mode == "memory":
        store = _memory_store(plan, memory_budget, progress, threads)
    else:
        if cache_dir is None:
            raise ValueError("data.cache=disk needs a cache folder")
        store = _disk_store(plan, Path(cache_dir), progress, threads)
    for ds, entries in zip(found, plan.entries):
        ds.use_cache(CachedClips(store, entries))
    return store


class _Plan:
    """The distinct files of some datasets, where each goes in the flat array, and its dtype."""

    def __init__(self, datasets: list[ClipDataset], sample_rate: int, resample: bool):
        self.sample_rate, self.resample = sample_rate, resample
        paths = np.concatenate([d.paths for d in datasets])
        self.paths, first, inverse = np.unique(paths, return_index=True, return_inverse=True)
        bounds = np.cumsum([0] + [len(d) for d in datasets])
        self.entries = [inverse[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        self.frames = np.concatenate([d.frames for d in datasets])[first]
        self.rates = np.concatenate([d.rates for d in datasets])[first]
        # room for soxr's one-shot output (within half a sample of the rate ratio; exact at equal rates)
        at_rate = np.ceil(self.frames * (sample_rate / np.maximum(self.rates, 1))).astype(np.int64) + 1
        capacity = np.where(self.rates == sample_rate, self.frames, at_rate)
        self.offsets = np.concatenate([[0], np.cumsum(capacity)]).astype(np.int64)
        # int16 can only be lossless for files that are not resampled; checked per file while decoding
        self.dtype = np.dtype(np.int16 if (self.rates == sample_rate).all() else np.float32)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def total(self) -> int:
        return int(self.offsets[-1])

    def describe(self, dtype=None) -> str:
        dtype = np.dtype(dtype or self.dtype)
        return f"{len(self):,} files, {_size(self.total * dtype.itemsize)} as {dtype.name} at {self.sample_rate} Hz"

    def key(self) -> str:
        """Hash of everything the decoded samples depend on, the files' sizes and mtimes included."""
        h = hashlib.sha256(f"helix-decoded v{FORMAT_VERSION} {self.sample_rate} {self.resample}\n".encode())
        for path, frames, rate in zip(self.paths, self.frames, self.rates):
            try:
                st = os.stat(path)
                size, mtime = st.st_size, st.st_mtime_ns
            except OSError:  # missing now: keyed as such, and fails when its item is read
                size, mtime = -1, -1
            h.update(b"%s\0%d %d %d %d\n" % (path, frames, rate, size, mtime))
        return h.hexdigest()[:24]


def _memory_store(plan: _Plan, budget: int | None, progress: bool, threads: int | None) -> DecodedStore:
    copies = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))  # every rank holds its own copy
    budget = machine_memory() // 2 if budget is None else int(budget)

    def check(dtype) -> None:
        need = plan.total * np.dtype(dtype).itemsize * copies
        if need > budget:
            ranks = f" x {copies} ranks on this machine" if copies > 1 else ""
            raise ValueError(f"data.cache=memory: the decoded corpus ({plan.describe(dtype)}{ranks}) exceeds the "
                             f"memory budget of {_size(budget)} (half this machine's RAM); use data.cache=disk "
                             "(a memmap file beside the manifest, shared through the page cache)")

    check(plan.dtype)

    def grow(old: np.ndarray) -> np.ndarray:
        check(np.float32)
        return _to_float32(old, np.empty(plan.total, dtype=np.float32))

    t0 = time.perf_counter()
    samples, index = _decode_all(plan, np.empty(plan.total, dtype=plan.dtype), grow, progress, threads)
    store = DecodedStore(samples, index, plan.sample_rate)
    _say(progress, f"data.cache=memory: decoded {_summary(plan, store, t0)} in RAM{_bad_note(index)}")
    return store


def _disk_store(plan: _Plan, folder: Path, progress: bool, threads: int | None) -> DecodedStore:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"data.cache=disk: cannot create the cache folder {folder} ({err.strerror}); make it "
                         "writable or use data.cache=memory") from None
    stem = f"decoded-{plan.sample_rate}hz-{plan.key()}"
    data_path, index_path = folder / f"{stem}.npy", folder / f"{stem}.index.npy"
    # one builder per cache file; other ranks (or runs) wait here and then reuse its result
    with open(folder / f"{stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        store = _open_disk_store(data_path, index_path, plan)
        if store is not None:
            _say(progress, f"data.cache=disk: reusing {data_path} ({plan.describe(store.samples.dtype)})")
            return store
        free = shutil.disk_usage(folder).free
        if plan.total * plan.dtype.itemsize > free:
            raise ValueError(f"data.cache=disk: the decoded corpus ({plan.describe()}) does not fit in the "
                             f"{_size(free)} free under {folder}; free space or use data.cache=none")
        t0 = time.perf_counter()
        with atomic_path(data_path, what="decoded audio cache") as tmp:
            samples = np.lib.format.open_memmap(tmp, mode="w+", dtype=plan.dtype, shape=(plan.total,))

            def grow(old: np.ndarray) -> np.ndarray:
                wider = tmp.with_name(tmp.name + ".f32")
                new = _to_float32(old, np.lib.format.open_memmap(wider, mode="w+", dtype=np.float32,
                                                                   shape=(plan.total,)))
                os.replace(wider, tmp)
                return new

            samples, index = _decode_all(plan, samples, grow, progress, threads)
            samples.flush()
            del samples
        # the index is written last: its presence says the samples file is complete
        with atomic_path(index_path, what="decoded audio cache index") as tmp, open(tmp, "wb") as f:
            np.save(f, index)  # to a file object: given a name, np.save would append ".npy" to it
        store = _open_disk_store(data_path, index_path, plan)
        _say(progress, f"data.cache=disk: decoded {_summary(plan, store, t0)} into {data_path}{_bad_note(index)}")
        return store


def _open_disk_store(data_path: Path, index_path: Path, plan: _Plan) -> DecodedStore | None:
    """The cache files if both exist and fit the plan, else None (to be rebuilt)."""
    if not (data_path.exists() and index_path.exists()):
        return None
    try:
        samples = np.load(data_path, mmap_mode="r")
        index = np.load(index_path)
    except (OSError, ValueError, EOFError):
        return None
    if samples.shape != (plan.total,) or index.shape != (len(plan), 2):
        return None
    return DecodedStore(samples, index, plan.sample_rate, path=data_path)


def _decode_all(plan: _Plan, samples: np.ndarray, grow, progress: bool, threads: int | None):
    """Decode every file of ``plan`` into ``samples`` -> (samples, index). ``grow(samples)`` returns
    a float32 copy, called when the first file turns out not to fit int16 losslessly."""
    index = np.stack([plan.offsets[:-1], np.full(len(plan), BAD, dtype=np.int64)], axis=1)
    workers = threads or min(8, len(os.sched_getaffinity(0)))

    def decode(j: int) -> np.ndarray | None:
        try:
            return load_audio(os.fsdecode(plan.paths[j]), plan.sample_rate, resample=plan.resample,
                              expected_frames=int(plan.frames[j]))
        except (ValueError, OSError):  # AudioError is a ValueError; its item raises it again when read
            return None

    bar = tqdm(total=len(plan), desc="decode once", unit="clip", disable=not progress, leave=False,
               mininterval=1.0, file=sys.stderr)
    with bar, ThreadPoolExecutor(workers) as pool:
        for lo in range(0, len(plan), CHUNK):
            hi = min(len(plan), lo + CHUNK)
            for j, x in zip(range(lo, hi), pool.map(decode, range(lo, hi))):
                bar.update(1)
                if x is None:
                    continue
                x = x[: plan.offsets[j + 1] - plan.offsets[j]]  # never past its slot (soxr length)
                if samples.dtype == np.int16:
                    scaled = x * np.float32(INT16_SCALE)
                    fits = (scaled.min(initial=0) >= -INT16_SCALE and scaled.max(initial=0) < INT16_SCALE
                            and np.array_equal(scaled, np.rint(scaled)))
                    if not fits:
                        samples = grow(samples)
                if samples.dtype == np.int16:
                    samples[plan.offsets[j] : plan.offsets[j] + len(x)] = scaled
                else:
                    samples[plan.offsets[j] : plan.offsets[j] + len(x)] = x
                index[j, 1] = len(x)
    return samples, index


def _to_float32(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """``new[:] = old / 32768`` in slices (no whole-corpus float64 temporary)."""
    step = 1 << 24
    for lo in range(0, len(old), step):
        np.multiply(old[lo : lo + step], np.float32(1 / INT16_SCALE), out=new[lo : lo + step])
    return new


def _summary(plan: _Plan, store: DecodedStore, t0: float) -> str:
    seconds = time.perf_counter() - t0
    return f"{plan.describe(store.samples.dtype)} in {seconds:.1f} s ({len(plan) / max(seconds, 1e-9):,.0f} clips/s)"


def _bad_note(index: np.ndarray) -> str:
    bad = int((index[:, 1] == BAD).sum())
    return f"; {bad} could not be decoded: their items read the file each time and fail as without a cache" if bad else ""


def _say(progress: bool, line: str) -> None:
    if progress:
        print(line, file=sys.stderr, flush=True)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
