"""Audio decoding: one place where files become float32 waveforms.

Every path that turns a file into samples goes through here -- training, ``helix data prepare`` and
``helix predict`` -- so a file that cannot be read fails the same way everywhere: an
:class:`AudioError` naming the file. Nothing here ever returns silence in place of a bad file.

Shapes: a waveform is ``(T,)`` (mono) or ``(C, T)`` (``mono=False``), float32 in [-1, 1] for PCM.
Resampling uses soxr (band-limited, "HQ"), never nearest-neighbour or linear interpolation.
"""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import soundfile as sf
import soxr

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioError",
    "AudioInfo",
    "fit_length",
    "iter_audio_blocks",
    "load_audio",
    "probe_audio",
]

# MP3 only where the installed libsndfile decodes it (>= 1.1); the others are always available
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg") + (
    (".mp3",) if "MP3" in sf.available_formats() else ()
)
RESAMPLE_QUALITY = "HQ"
# libsndfile's note on a WAV whose data chunk is longer than the file: "data : 32000 (should be 15978)"
_SHORT_DATA = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# libsndfile's notes on an Ogg stream cut short: it still reports the pages before the cut as a
# whole (shorter) file, so these notes are the only sign that audio is missing
_OGG_TRUNCATED = ("ended unexpectedly", "lacks an end-of-stream bit", "junk after the last page")


class AudioError(ValueError):
    """A file that cannot be used as audio: missing, empty, truncated, corrupt or of unknown type."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class AudioInfo:
    """What :func:`probe_audio` learned from a fully decoded file."""

    frames: int
    sample_rate: int
    channels: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def _open(path: str | os.PathLike) -> sf.SoundFile:
    """Open ``path`` for reading after the checks that libsndfile reports poorly."""
    ext = os.path.splitext(str(path))[1].lower()
    if ext not in AUDIO_EXTENSIONS:
        raise AudioError(path, f"unsupported extension {ext or '(none)'!r}; supported: {', '.join(AUDIO_EXTENSIONS)}")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise AudioError(path, "file not found") from None
    except OSError as err:
        raise AudioError(path, f"cannot read file ({err.strerror})") from None
    # opening a FIFO or a device blocks or reads forever: only regular files are audio files
    if not stat.S_ISREG(st.st_mode):
        raise AudioError(path, f"not a regular file (a {_file_kind(st.st_mode)})")
    if st.st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        f = sf.SoundFile(path)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(path, f"cannot decode ({_libsndfile_message(err)})") from None
    notes = f.extra_info  # libsndfile's parse log: the only place it admits a short file
    cut_ogg = [line.strip() for line in notes.splitlines() if any(n in line.lower() for n in _OGG_TRUNCATED)]
    if cut_ogg:
        f.close()
        raise AudioError(path, f"file is truncated (libsndfile: {cut_ogg[0]})")
    if f.frames <= 0:
        f.close()
        raise AudioError(path, "no audio frames")
    short = _SHORT_DATA.search(notes)
    declared, held = (int(short.group(1)), int(short.group(2))) if short else (0, 0)
    # a missing pad byte is harmless, and 0 / 0xFFFFFFFF are streaming writers' "unknown length";
    # a missing frame or more of a declared length means the file was cut off
    if declared not in (0, 0xFFFFFFFF) and declared - held >= f.channels:
        f.close()
        raise AudioError(path, f"file is truncated: header promises {declared} data bytes, file holds {held}")
    return f


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
             (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))
    return next((name for test, name in kinds if test(mode)), "special file")


def _libsndfile_message(err: Exception) -> str:
    text = str(err)
    # libsndfile prefixes "Error opening '<path>': " -- the path is already in our message
    return text.split("': ", 1)[-1] if "': " in text else text


def _to_layout(x: np.ndarray, mono: bool) -> np.ndarray:
    """(T, C) as read -> (T,) mean over channels, or (C, T)."""
    if mono:
        return np.ascontiguousarray(x[:, 0]) if x.shape[1] == 1 else x.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(x.T)


def load_audio(
    path: str | os.PathLike,
    sample_rate: int = 16000,
    *,
    mono: bool = True,
    offset: float = 0.0,
    duration: float | None = None,
    resample: bool = True,
    expected_frames: int | None = None,
) -> np.ndarray:
    """Decode ``path`` to float32 at ``sample_rate``: ``(T,)`` if ``mono`` else ``(C, T)``.

    ``offset``/``duration`` (seconds, in the file's own time line) read only that part of the file,
    so a crop of a long recording costs only what it reads. ``expected_frames`` (the length the
    manifest recorded) turns a file that changed after ``helix data prepare`` into an error.
    With ``resample=False`` a file at another rate is refused instead of resampled.
    Raises :class:`AudioError` naming the file for anything unreadable.
    """
    with _open(path) as f:
        native = f.samplerate
        if native != sample_rate and not resample:
            raise AudioError(
                path, f"sample rate is {native} Hz, expected {sample_rate} Hz and resampling is disabled"
            )
        if expected_frames is not None and f.frames != expected_frames:
            raise AudioError(
                path,
                f"has {f.frames} frames but the manifest recorded {expected_frames}: the file changed "
                "after `helix data prepare`; run prepare again",
            )
        # floor (with slack for float error) keeps an offset inside the file at its last frame
        start = max(0, int(math.floor(offset * native + 1e-6)))
        stop = f.frames if duration is None else min(f.frames, start + int(math.ceil(duration * native)))
        if start >= f.frames:
            raise AudioError(path, f"offset {offset:.3f} s is past the end ({f.frames / native:.3f} s)")
        try:
            if start:
                f.seek(start)
            x = f.read(stop - start, dtype="float32", always_2d=True)  # (T, C)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioError(path, f"decoding failed ({_libsndfile_message(err)})") from None
        if x.shape[0] < stop - start:
            raise AudioError(path, f"file is truncated: read {x.shape[0]} of {stop - start} frames")
    x = _to_layout(x, mono)
    if native != sample_rate:
        x = _resample(x, native, sample_rate)
    return x


def _resample(x: np.ndarray, native: int, sample_rate: int) -> np.ndarray:
    """(T,) or (C, T) -> same layout at ``sample_rate`` (soxr wants (T, C))."""
    if x.ndim == 1:
        return soxr.resample(x, native, sample_rate, quality=RESAMPLE_QUALITY).astype(np.float32, copy=False)
    y = soxr.resample(x.T, native, sample_rate, quality=RESAMPLE_QUALITY)
    return np.ascontiguousarray(y.T, dtype=np.float32)


def iter_audio_blocks(
    path: str | os.PathLike,
    block_seconds: float,
    sample_rate: int = 16000,
    *,
    resample: bool = True,
) -> Iterator[np.ndarray]:
    """Yield consecutive mono float32 blocks ``(round(block_seconds * sample_rate),)`` of ``path``.

    The last block may be shorter. Memory stays at a few blocks whatever the file's length: the file
    is read block by block and resampled with a streaming soxr resampler, whose output equals
    :func:`load_audio`'s one-shot resampling.
    """
    block = int(round(block_seconds * sample_rate))
    if block <= 0:
        raise ValueError(f"block_seconds must give at least one sample, got {block_seconds}")
    with _open(path) as f:
        native = f.samplerate
        if native != sample_rate and not resample:
            raise AudioError(
                path, f"sample rate is {native} Hz, expected {sample_rate} Hz and resampling is disabled"
            )
        stream = soxr.ResampleStream(native, sample_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY) \
            if native != sample_rate else None
        native_block = max(1, int(math.ceil(block_seconds * native)))
        pending = np.zeros(0, dtype=np.float32)
        done = False
        while not done:
            try:
                x = f.read(native_block, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as err:
                raise AudioError(path, f"decoding failed ({_libsndfile_message(err)})") from None
            done = x.shape[0] < native_block
            y = _to_layout(x, mono=True)
            if stream is not None:
                y = stream.resample_chunk(y, last=done)
            pending = np.concatenate([pending, y]) if pending.size else y
            while pending.size >= block:
                yield pending[:block].copy()
                pending = pending[block:]
        if pending.size:
            yield pending.copy()


def probe_audio(path: str | os.PathLike) -> AudioInfo:
    """Decode all of ``path`` and check it; return its native frames, rate and channel count.

    Used by ``helix data prepare``. Beyond what opening catches (unknown type, empty, a WAV whose
    header promises more data than the file holds), this decodes every frame, so a corrupt stream
    in the middle of a FLAC, or NaN/infinity in a float file, is found before training starts.
    Raises :class:`AudioError`.
    """
    with _open(path) as f:
        info = AudioInfo(frames=f.frames, sample_rate=f.samplerate, channels=f.channels)
        check_finite = f.subtype in ("FLOAT", "DOUBLE")
        decoded = 0
        try:
            # blocks bound memory for hour-long recordings; one block covers any short clip
            for x in f.blocks(blocksize=1 << 20, dtype="float32", always_2d=True):
                decoded += x.shape[0]
                if check_finite and not np.isfinite(x).all():
                    raise AudioError(path, "contains NaN or infinite samples")
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioError(path, f"decoding failed after {decoded} frames ({_libsndfile_message(err)})") from None
    if decoded != info.frames:
        raise AudioError(path, f"file is truncated: decoded {decoded} of {info.frames} frames")
    return info


def fit_length(x: np.ndarray, num_samples: int, offset: int = 0) -> np.ndarray:
    """Crop ``x[..., offset:offset + num_samples]`` or zero-pad at the end to ``num_samples``."""
    have = x.shape[-1] - offset
    if have >= num_samples:
        return x[..., offset : offset + num_samples]
    out = np.zeros(x.shape[:-1] + (num_samples,), dtype=x.dtype)
    if have > 0:
        out[..., :have] = x[..., offset:]
    return out

