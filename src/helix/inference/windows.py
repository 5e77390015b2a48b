"""Sliding windows over audio of any length, streamed from blocks so memory stays bounded.

A window is ``window`` samples long; consecutive windows start ``hop`` samples apart. Placement:

- audio shorter than one window: one window at 0, zero-padded at the end -- what training does to a
  short clip (:func:`helix.data.audio.fit_length`);
- otherwise windows at 0, hop, 2 hop, ... while they fit, plus one last window aligned to the end
  of the audio if the regular ones stop short of it, so every sample is seen and no window is
  padded (a padded tail would be scored on mostly silence).

Shapes: audio ``(T,)``; a window ``(window,)``; a batch of windows ``(B, window)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from helix.data.audio import AudioError

LOUD_PEAK = 1e3
"""Sample magnitude beyond which a non-finite model output is blamed on the audio (full scale is 1)."""
MAX_WINDOW_SECONDS = 600.0
"""Longest window accepted (or the training clip, if longer): one forward pass holds ``batch_size``
windows, and longer audio is covered by sliding windows anyway."""


@dataclass(frozen=True)
class Window:
    """One analysis window: samples ``[start, start + length)`` of the audio, padded to full size."""

    start: int
    """First sample (at the model's rate)."""
    length: int
    """Real samples in the window (< the window size only for audio shorter than one window)."""
    samples: np.ndarray
    """(window,) float32."""


def resolve_window(window_seconds: float | None, hop_seconds: float | None, clip_seconds: float,
                   sample_rate: int, min_samples: int = 1) -> tuple[int, int]:
    """Window and hop in samples; defaults: the training clip length and half of the window.

    Raises ValueError (one line) for a window or hop that is not a positive finite number of
    seconds, a window longer than :data:`MAX_WINDOW_SECONDS`, or shorter than the model accepts.
    """
    seconds = clip_seconds if window_seconds is None else _seconds(window_seconds, "window")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"window must be a positive number of seconds, got {window_seconds!r}")
    limit = max(MAX_WINDOW_SECONDS, clip_seconds or 0.0)  # a model trained on longer clips keeps its length
    if seconds > limit:
        near = f" ({clip_seconds:g} s)" if clip_seconds else ""
        raise ValueError(f"window of {seconds:g} s is longer than the {limit:g} s limit; long files are scored in "
                         f"sliding windows, so use a window near the training clip length{near}")
    window = int(round(seconds * sample_rate))
    if window < min_samples:
        raise ValueError(f"window of {seconds} s is {window} samples; the model needs at least {min_samples}")
    if hop_seconds is None:
        return window, max(1, window // 2)
    hop_s = _seconds(hop_seconds, "hop")
    if not math.isfinite(hop_s) or hop_s <= 0:
        raise ValueError(f"hop must be a positive number of seconds, got {hop_seconds!r}")
    hop = int(round(hop_s * sample_rate))
    if hop <= 0:
        raise ValueError(f"hop of {hop_s:g} s is less than one sample at {sample_rate} Hz")
    return window, hop


def _seconds(value, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}") from None


def window_starts(num_samples: int, window: int, hop: int) -> list[int]:
    """Start sample of every window over ``num_samples`` samples (see the module docstring)."""
    if num_samples <= window:
        return [0]
    starts = list(range(0, num_samples - window + 1, hop))
    if starts[-1] + window < num_samples:
        starts.append(num_samples - window)
    return starts


def iter_windows(blocks: Iterable[np.ndarray], window: int, hop: int) -> Iterator[Window]:
    """Windows over the concatenation of ``blocks`` (each (T_i,)), placed as :func:`window_starts`.

    Holds at most one window plus one block in memory, so an hour-long file streams in constant
    memory. Yields nothing for empty input.
    """
    buf = np.zeros(0, dtype=np.float32)
    buf_start = 0  # absolute index of buf[0]
    next_start = 0
    last_end = 0  # end of the last window yielded
    total = 0
    for block in blocks:
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        if not block.size:
            continue
        buf = np.concatenate([buf, block]) if buf.size else block
        total += block.size
        while next_start + window <= total:
            a = next_start - buf_start
            yield Window(next_start, window, buf[a:a + window].copy())
            last_end = next_start + window
            next_start += hop
        # keep what a later regular window or the end-aligned final window can still need
        keep_from = min(next_start, total - window) if total > window else 0
        if keep_from > buf_start:
            buf = buf[keep_from - buf_start:]
            buf_start = keep_from
    if total == 0:
        return
    if total < window:
        samples = np.zeros(window, dtype=np.float32)
        samples[:total] = buf[:total]
        yield Window(0, total, samples)
    elif last_end < total:
        a = total - window - buf_start
        yield Window(total - window, window, buf[a:a + window].copy())


@dataclass
class WindowedResult:
    """Everything one source produced: per-output sums over windows, and optionally each window."""

    key: object
    """The caller's handle for the source (e.g. its index or path)."""
    num_samples: int = 0
    """Samples the source held (at the model's rate)."""
    peak: float = 0.0
    """Largest absolute sample value, to flag silence."""
    count: int = 0
    """Windows scored."""
    sums: dict[str, np.ndarray] | None = None
    """Output name -> sum over windows, float64 (divide by ``count`` for the mean)."""
    starts: list[int] | None = None
    """With ``keep_windows``: start sample of each window."""
    lengths: list[int] | None = None
    """With ``keep_windows``: real samples in each window."""
    per_window: dict[str, list[np.ndarray]] | None = None
    """With ``keep_windows``: output name -> one array per window."""
    error: Exception | None = None
    """Set when the source failed (then the other fields are partial and must not be used)."""
    done: bool = False
    pending: int = 0

    def add(self, window: Window, outputs: dict[str, np.ndarray], keep: bool) -> None:
        if self.sums is None:
            self.sums = {k: np.zeros(v.shape, dtype=np.float64) for k, v in outputs.items()}
            if keep:
                self.starts, self.lengths, self.per_window = [], [], {k: [] for k in outputs}
        for k, v in outputs.items():
            self.sums[k] += v
            if keep:
                self.per_window[k].append(v)
        if keep:
            self.starts.append(window.start)
            self.lengths.append(window.length)
        self.count += 1


def run_windows(forward, sources: Iterable[tuple[object, Iterable[np.ndarray]]], window: int, hop: int,
                batch_size: int = 8, keep_windows: bool = False, progress=None,
                masked: bool = False) -> Iterator[WindowedResult]:
    """Stream every source's windows through ``forward`` in batches; yield one result per source, in order.

    ``forward`` maps (B, window) float32 to ``{name: (B, ...) array}``. Windows of consecutive
    sources share batches, so many short files batch as well as one long one. An error while a
    source's blocks are read (decoding, a truncated file) marks that source failed and the run goes
    on; so does a source with no samples, or one whose window gives a non-finite output (NaN/inf);
    the error names the source. Other errors from ``forward`` propagate. ``progress(num_samples)``
    is called as audio is read. ``masked``: ``forward(x, lengths)`` also gets each window's real
    sample count ((B,) int64), so a window of audio shorter than one window is scored as that audio
    alone (``model(wave, lengths)``), not with its zero padding.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    queue: list[WindowedResult] = []  # sources not yet yielded, in input order
    batch: list[tuple[WindowedResult, Window]] = []

    def flush():
        if not batch:
            return
        x = np.stack([w.samples for _, w in batch])  # (B, window)
        if masked:
            outputs = forward(x, np.array([w.length for _, w in batch], dtype=np.int64))
        else:
            outputs = forward(x)  # {name: (B, ...)}
        for i, (res, w) in enumerate(batch):
            res.pending -= 1
            if res.error is not None:
                continue
            row = {k: v[i] for k, v in outputs.items()}
            if all(np.isfinite(v).all() for v in row.values()):
                res.add(w, row, keep_windows)
            else:
                res.error = non_finite_output(res, w)
        batch.clear()

    def ready():
        while queue and queue[0].done and queue[0].pending == 0:
            yield queue.pop(0)

    for key, blocks in sources:
        res = WindowedResult(key)
        queue.append(res)
        try:
            for w in iter_windows(_watch(blocks, res, progress), window, hop):
                batch.append((res, w))
                res.pending += 1
                if len(batch) >= batch_size:
                    flush()
                    yield from ready()
                if res.error is not None:
                    break  # its output was not finite: the rest of the file cannot rescue it
            else:
                if res.num_samples == 0:
                    res.error = AudioError(key, "no audio samples (after decoding and resampling)")
        except (ValueError, OSError) as err:  # AudioError is a ValueError
            res.error = err
        if res.error is not None:
            res.pending -= sum(r is res for r, _ in batch)
            batch[:] = [(r, w) for r, w in batch if r is not res]
        res.done = True
        yield from ready()
    flush()
    yield from ready()


def non_finite_output(res: WindowedResult, w: Window) -> AudioError:
    """The failure of a source whose window produced NaN/inf: blamed on the audio when its samples are
    far outside [-1, 1], else on the model."""
    where = f"the model's output is NaN/inf for the window at sample {w.start}"
    peak = float(np.abs(w.samples).max()) if w.samples.size else 0.0
    if not math.isfinite(peak) or peak > LOUD_PEAK:
        return AudioError(res.key, f"{where}: its samples reach {peak:.3g}, far outside [-1, 1] (full scale); "
                                   "rescale the audio")
    return AudioError(res.key, f"{where} although its samples are in range (peak {peak:.3g}); the checkpoint's "
                               "weights may be corrupted")


def _watch(blocks: Iterable[np.ndarray], res: WindowedResult, progress) -> Iterator[np.ndarray]:
    """Pass blocks through, recording length and peak, and reporting progress in samples."""
    for block in blocks:
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        if block.size:
            res.num_samples += block.size
            res.peak = max(res.peak, float(np.abs(block).max()))
        if progress is not None:
            progress(block.size)
        yield block
