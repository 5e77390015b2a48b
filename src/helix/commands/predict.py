"""``helix predict CHECKPOINT PATH...``: label audio files (or folders of them) with a trained model.

    helix predict runs/esc50/best.pt clip.wav recordings/ --top-k 3
    helix predict runs/esc50/best.pt long.flac --timeline --format json -o long.json

Files longer than the window are scored in sliding windows and the file's prediction is the mean
of the windows' softmax probabilities. A file that cannot be read does not stop the run: the others
complete, the failures are listed at the end and the exit status is 1.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from helix.utils.io import atomic_write, check_output
from helix.data.audio import AUDIO_EXTENSIONS

OUTPUT_FORMATS = ("table", "json", "csv")


def register(sub) -> None:
    p = sub.add_parser("predict", help="predict labels of audio files with a trained checkpoint",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a helix checkpoint (best.pt / last.pt)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="audio files or folders (searched recursively)")
    add_window_args(p)
    p.add_argument("--top-k", type=int, default=5, help="labels to report per file (default 5)")
    p.add_argument("--timeline", action="store_true", help="also report every window's top labels")
    p.add_argument("--format", choices=OUTPUT_FORMATS, default="table", help="output format (default table)")
    p.add_argument("-o", "--output", help="write the output here instead of stdout")
    p.set_defaults(func=run)


def add_window_args(p) -> None:
    """Options shared by predict, embed and verify."""
    p.add_argument("--window", type=float, metavar="SECONDS",
                   help="window length (default: the checkpoint's training clip length)")
    p.add_argument("--hop", type=float, metavar="SECONDS", help="hop between windows (default: half the window)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default 8)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def collect_inputs(paths: list[str]) -> list[str]:
    """Files as given, folders expanded to their audio files (sorted); raises for a folder with none."""
    out = []
    for p in paths:
        if Path(p).is_dir():
            found = sorted(f for f in Path(p).rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS and f.is_file())
            if not found:
                raise ValueError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under folder {p}")
            out.extend(str(f) for f in found)
        else:
            out.append(p)  # missing or unsupported files fail later, in the failure list
    return out


def progress_bar(files: list, quiet: bool, desc: str = "predict") -> tqdm:
    """A bar over seconds of audio (durations from the file headers; unreadable ones count 0)."""
    total = 0.0
    for f in files:
        if not os.path.isfile(f):
            continue  # missing, a folder, or a FIFO that sf.info would block on: it fails later, by name
        with contextlib.suppress(Exception):
            total += sf.info(str(f)).duration
    # disable=None: no bar when stderr is not a terminal (logs, CI)
    return tqdm(total=round(total, 1), unit=" s audio", desc=desc, dynamic_ncols=True,
                disable=True if quiet else None, file=sys.stderr)


def say(message: str) -> None:
    """A line on stderr that does not break the progress bar."""
    tqdm.write(message, file=sys.stderr)


def report_failures(failures: list, total: int) -> int:
    """List failures on stderr; the exit status (1 if any)."""
    if not failures:
        return 0
    say(f"{len(failures)} of {total} input(s) failed:")
    for f in failures:
        say(f"  {f.error}" if f.source in str(f.error) else f"  {f.source}: {f.error}")
    return 1


@contextlib.contextmanager
def open_output(path: str | None, inputs: list = ()):
    """stdout, or a text file that replaces ``path`` only once the block succeeds (refused when it is
    one of ``inputs``)."""
    if path is None:
        yield sys.stdout
    else:
        with atomic_write(path, "w", inputs, newline="") as f:
            yield f


def guard_stdout(run_command):
    """Wrap a command so that a reader closing stdout early (``helix predict ... | head``) ends it
    quietly with status 141 (128 + SIGPIPE, what a shell reports) instead of a BrokenPipeError."""

    def wrapped(args) -> int:
        try:
            status = run_command(args)
            sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
            return status
        except BrokenPipeError:
            # later flushes (interpreter exit) would fail again: point stdout at /dev/null
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return 141

    wrapped.__doc__ = run_command.__doc__
    return wrapped


@guard_stdout
def run(args) -> int:
    from helix.inference.predict import Failure, load_predictor

    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    if args.output is not None:
        check_output(args.output, [args.checkpoint, *args.paths])  # before anything is opened
    predictor = load_predictor(args.checkpoint, device=args.device, batch_size=args.batch_size)
    window, hop = predictor.window(args.window, args.hop)
    files = collect_inputs(args.paths)
    inputs = [args.checkpoint, *files]
    if args.output is not None:
        check_output(args.output, inputs)  # an audio file found in a folder
    sr = predictor.sample_rate
    meta = {"checkpoint": args.checkpoint, "window_seconds": window / sr, "hop_seconds": hop / sr,
            "aggregation": "mean over windows of the softmax probabilities"}
    writer = _Writer(args.format, args.timeline, max(len(f) for f in files))
    failures = []
    with open_output(args.output, inputs) as out, progress_bar(files, args.quiet) as bar:
        emit = (lambda text: out.write(text + "\n")) if args.output or bar.disable else (lambda text: tqdm.write(text))
        writer.start(emit)
        results = predictor.predict_many(files, top_k=args.top_k, window_seconds=args.window,
                                         hop_seconds=args.hop, timeline=args.timeline, progress=bar.update)
        for res in results:
            if isinstance(res, Failure):
                failures.append(res)
                continue
            for message in res.warnings:
                say(f"warning: {message}")
            writer.add(res, emit)
        bar.close()
        writer.finish(emit, meta, failures)
    return report_failures(failures, len(files))


class _Writer:
    """Table and CSV rows are written as files finish; JSON is one document at the end."""

    def __init__(self, fmt: str, timeline: bool, name_width: int):
        self.fmt, self.timeline = fmt, timeline
        self.width = min(max(name_width, 4), 60)
        self.items: list[dict] = []

    def start(self, emit) -> None:
        if self.fmt == "table":
            emit(f"{'file':{self.width}s} {'seconds':>9s} {'rank':>4s}  {'label':24s} {'prob':>7s}")
        elif self.fmt == "csv":
            emit("file,scope,start,end,rank,label,prob")

    def add(self, pred, emit) -> None:
        if self.fmt == "json":
            self.items.append(pred.to_dict())
        elif self.fmt == "csv":
            self._csv_rows(emit, pred.source, "file", 0.0, pred.duration, pred.top)
            for w in pred.timeline or []:
                self._csv_rows(emit, pred.source, "window", w.start, w.end, _top(w.probs, pred))
        else:
            for rank, (label, prob) in enumerate(pred.top, 1):
                name, secs = (pred.source, f"{pred.duration:9.2f}") if rank == 1 else ("", "")
                emit(f"{_fit(name, self.width):{self.width}s} {secs:>9s} {rank:4d}  {label:24s} {prob:7.4f}")
            for w in pred.timeline or []:
                labels = ", ".join(f"{k} {p:.3f}" for k, p in _top(w.probs, pred))
                emit(f"{'':{self.width}s}   window {w.start:9.2f}-{w.end:.2f} s: {labels}")

    def _csv_rows(self, emit, source, scope, start, end, top) -> None:
        for rank, (label, prob) in enumerate(top, 1):
            row = _csv_line([source, scope, f"{start:.4f}", f"{end:.4f}", rank, label, f"{prob:.6f}"])
            emit(row)

    def finish(self, emit, meta: dict, failures: list) -> None:
        if self.fmt == "json":
            doc = {**meta, "predictions": self.items, "failures": [f.to_dict() for f in failures]}
            emit(json.dumps(doc, indent=1))


def _top(probs, pred):
    from helix.inference.predict import top_labels

    return top_labels(probs, pred.class_names, pred.top_k)


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3):]


def _csv_line(fields) -> str:
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(fields)
    return buf.getvalue()
