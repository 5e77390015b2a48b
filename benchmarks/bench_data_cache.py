"""Clips/s a DataLoader delivers with ``data.cache`` none / memory / disk (issue 13, "Feeding the GPU").

A generated Speech Commands-layout corpus (16-bit 16 kHz one-second WAVs, ``bench_data_prepare.generate``)
is prepared once; each mode builds ``build_task("speechcommands", root, 1.0)``, attaches the cache
(:func:`helix.data.cache.cache_datasets`; ``disk`` is built once and then reused, as a later run
would) and times ``build_dataloader(batch_size=32, shuffle=True)`` over ``--batches`` batches after
``--warmup``, ``--repeats`` times (median reported). Also times building the cache.

    python benchmarks/bench_data_cache.py --files 6000 --workers 0 2 --write-results
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from helix.data.cache import cache_datasets
from helix.data.tasks import build_task

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data_loading import measure, prepared_corpus  # noqa: E402
from bench_data_prepare import machine  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADING = "### Decode-once cache (issue 13)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="/tmp/helix-bench-cache")
    parser.add_argument("--files", type=int, default=6000)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    root = Path(args.root)
    prepared_corpus(root, args.files)
    cache_dir = root / "helix" / "cache"
    for old in cache_dir.glob("decoded-*"):  # the first disk build is timed too
        old.unlink()
    load_before = os.getloadavg()
    rows, builds = [], []
    # "disk" twice: the first call builds the files (timed, not measured), the second reuses them
    for mode, label in (("none", None), ("memory", "memory"), ("disk", "disk, first build"),
                        ("disk", "disk, reused")):
        parts = build_task("speechcommands", root, 1.0)
        t0 = time.perf_counter()
        store = cache_datasets(parts[:3], mode, cache_dir, progress=False)
        seconds = time.perf_counter() - t0
        if store is not None:
            builds.append((label, seconds, len(store.index), store.nbytes, store.samples.dtype.name))
        if label == "disk, first build":
            continue
        train = parts[0]
        for workers in args.workers:
            rates = [measure(train, workers, args.batches, args.warmup) for _ in range(args.repeats)]
            rows.append((mode, workers, statistics.median(rates), min(rates), max(rates)))
            print(f"cache={mode:6s} workers={workers}: {statistics.median(rates):,.0f} clips/s "
                  f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})", flush=True)
    for label, seconds, files, nbytes, dtype in builds:
        print(f"build {label}: {seconds:.2f} s, {files / seconds:,.0f} files/s, {nbytes / 1e6:.0f} MB {dtype}")
    load_after = os.getloadavg()
    if args.write_results:
        when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        table = ["| data.cache | workers | clips/s (median) | min | max |", "|---|---:|---:|---:|---:|"]
        table += [f"| {m} | {w} | {med:,.0f} | {lo:,.0f} | {hi:,.0f} |" for m, w, med, lo, hi in rows]
        built = [f"- cache build, {label}: {s:.2f} s for {n:,} files ({n / s:,.0f} files/s), "
                 f"{b / 1e6:.0f} MB {d}" for label, s, n, b, d in builds]
        body = "\n".join([
            HEADING, "",
            f"- machine: {machine()}",
            f"- date: {when}",
            f"- command: `python {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}`",
            f"- load average (1/5/15 min) before: {' / '.join(f'{x:.2f}' for x in load_before)}, after: "
            f"{' / '.join(f'{x:.2f}' for x in load_after)} (the cores are shared with other jobs)",
            f"- data: the training split ({len(train):,} clips) of a generated Speech Commands-layout corpus "
            f"({args.files:,} one-second 16-bit 16 kHz WAVs, page cache warm); `build_dataloader(batch_size=32, "
            f"shuffle=True)`, {args.batches} batches after {args.warmup} warm-up, {args.repeats} runs per row",
            "", *table, "", *built, ""])
        text = RESULTS.read_text()
        if HEADING in text:  # replace our section (up to the next heading), leave the rest alone
            head, rest = text.split(HEADING, 1)
            nxt = min((i for i in (rest.find("\n## "), rest.find("\n### ")) if i >= 0), default=len(rest))
            text = head + body + rest[nxt:].lstrip("\n")
        else:
            text = text.rstrip() + "\n\n" + body
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
