"""``helix predict CHECKPOINT PATH...``: label audio files (or folders of them) with a trained model.

    helix predict runs/esc50/best.pt clip.wav recordings/ --top-k 3
    helix predict runs/esc50/best.pt long.flac --timeline --format json -o long.json

Files longer than the window are scored in sliding windows and the file's prediction is the mean
of the windows' softmax probabilities. A file that cannot be read does not stop the run: the others
complete, the failures are listed at the end and the exit status is 1.
"""

from __future__ import annotations

import csv
import json
import sys

from helix.commands._common import add_window_args, collect_inputs, guard_stdout, open_output, progress_bar, \
    report_failures, say

OUTPUT_FORMATS = ("table", "json", "csv")


def register(sub) -> None:
    p = sub.add_parser("predict", help="predict labels of audio files with a trained checkpoint",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a helix checkpoint (best.pt / last.pt)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="audio files or folders (searched recursively)")
    add_window_args(p)
    p.add_argument("--top-k", type=int, default=5, help="labels to report per file (default 5)")
    p.add_argument("--timeline", action="store_true", help="also report every window's top labels")
    p.add_argument("--threshold", type=float, default=0.5, metavar="P",
                   help="multi-label checkpoints: report every label with probability >= P (default 0.5)")
    p.add_argument("--format", choices=OUTPUT_FORMATS, default="table", help="output format (default table)")
    p.add_argument("-o", "--output", help="write the output here instead of stdout")
    p.set_defaults(func=run)


@guard_stdout
def run(args) -> int:
    from tqdm import tqdm

    from helix.inference.predict import Failure, load_predictor
    from helix.utils.io import check_output

    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    if not 0.0 <= args.threshold <= 1.0:
        raise ValueError(f"--threshold must be in [0, 1], got {args.threshold}")
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
            "aggregation": "mean over windows of the "
                           + ("per-class sigmoid probabilities" if predictor.multilabel else "softmax probabilities")}
    writer = _Writer(args.format, args.timeline, max(len(f) for f in files))
    failures = []
    with open_output(args.output, inputs) as out, progress_bar(files, args.quiet) as bar:
        emit = (lambda text: out.write(text + "\n")) if args.output or bar.disable else (lambda text: tqdm.write(text))
        writer.start(emit)
        results = predictor.predict_many(files, top_k=args.top_k, window_seconds=args.window,
                                         hop_seconds=args.hop, timeline=args.timeline, progress=bar.update,
                                         threshold=args.threshold)
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
            self._csv_rows(emit, pred.source, "file", 0.0, pred.duration, _shown(pred))
            for w in pred.timeline or []:
                self._csv_rows(emit, pred.source, "window", w.start, w.end, _top(w.probs, pred))
        else:
            shown = _shown(pred)
            for rank, (label, prob) in enumerate(shown, 1):
                name, secs = (pred.source, f"{pred.duration:9.2f}") if rank == 1 else ("", "")
                emit(f"{_fit(name, self.width):{self.width}s} {secs:>9s} {rank:4d}  {label:24s} {prob:7.4f}")
            if not shown:  # a multi-label file with no label at the threshold
                emit(f"{_fit(pred.source, self.width):{self.width}s} {pred.duration:9.2f} {'-':>4s}  "
                     f"{f'(none >= {pred.threshold:g})':24s}")
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


def _shown(pred):
    """The file's labels: the top-k of a single-label model, the labels at or above the threshold
    of a multi-label one."""
    return pred.tags if pred.multilabel else pred.top


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
