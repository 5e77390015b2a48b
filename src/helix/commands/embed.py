"""``helix embed CHECKPOINT PATH... -o OUT``: pooled embeddings of audio files, per file or per window.

    helix embed runs/vox/best.pt wavs/ -o embeddings/            # one .npy per file + index.json
    helix embed runs/vox/best.pt a.wav --per-window -o a.json    # JSON, one vector per window

A file's embedding is the mean of its windows' pooled features (the vector the classifier head
reads). Unreadable files are listed at the end and make the exit status 1; the rest are written.
"""

from __future__ import annotations

import json

from helix.commands._common import add_window_args, collect_inputs, progress_bar, report_failures, say
from helix.utils.io import atomic_write, check_output


def register(sub) -> None:
    p = sub.add_parser("embed", help="pooled embeddings of audio files (NumPy or JSON)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a helix checkpoint")
    p.add_argument("paths", nargs="+", metavar="PATH", help="audio files or folders (searched recursively)")
    p.add_argument("-o", "--output", required=True,
                   help="a folder for --format npy, a .json file for --format json")
    p.add_argument("--format", choices=("npy", "json"),
                   help="npy: one .npy per file plus index.json; json: one document "
                        "(default: json when OUTPUT ends in .json, else npy)")
    p.add_argument("--per-window", action="store_true", help="one embedding per window instead of per file")
    add_window_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from helix.inference.embed import embed_many, embeddings_to_json, write_npy_folder
    from helix.inference.predict import Failure, load_predictor

    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    fmt = args.format or ("json" if args.output.endswith(".json") else "npy")
    what = "npy folder" if fmt == "npy" else "output"
    check_output(args.output, [args.checkpoint, *args.paths], what=what, folder=fmt == "npy")
    predictor = load_predictor(args.checkpoint, device=args.device, batch_size=args.batch_size)
    window, hop = predictor.window(args.window, args.hop)
    files = collect_inputs(args.paths)
    inputs = [args.checkpoint, *files]
    check_output(args.output, inputs, what=what, folder=fmt == "npy")
    results, failures = [], []
    with progress_bar(files, args.quiet, "embed") as bar:
        for res in embed_many(predictor, files, per_window=args.per_window, window_seconds=args.window,
                              hop_seconds=args.hop, progress=bar.update):
            if isinstance(res, Failure):
                failures.append(res)
                continue
            for message in res.warnings:
                say(f"warning: {message}")
            results.append(res)
    sr = predictor.sample_rate
    meta = {"checkpoint": args.checkpoint, "window_seconds": window / sr, "hop_seconds": hop / sr,
            "pooling": "per window" if args.per_window else "mean of window embeddings"}
    if fmt == "json":
        out = args.output
        with atomic_write(out, "w", inputs) as f:
            f.write(json.dumps(embeddings_to_json(results, failures, meta)) + "\n")
    else:
        out = write_npy_folder(args.output, results, failures, meta, inputs)
    say(f"wrote {len(results)} embedding(s) to {out}")
    return report_failures(failures, len(files))
