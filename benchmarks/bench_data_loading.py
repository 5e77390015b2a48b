"""Time the training input pipeline: one-second clips through ``build_dataloader`` (batch 32).

Target (issue 4): at least 2,000 one-second clips/s with 2 workers. Uses the Speech Commands-sized
corpus of bench_data_prepare.py (generated and prepared first if missing), the real training path
(``build_task("speechcommands", ...)``, shuffled, random crops on) and counts clips that reach
the main process as ``(32, 16000)`` batches, after a warm-up.

    python benchmarks/bench_data_loading.py --workers 2 --write-results
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from helix.data.dataset import build_dataloader
from helix.data.tasks import build_task
from helix.data.recipes import get_recipe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data_prepare import evict, generate, machine, record  # noqa: E402


def measure(dataset, workers: int, batches: int, warmup: int, batch_size: int = 32) -> float:
    """Clips per second delivered to the main process (after ``warmup`` batches)."""
    loader = build_dataloader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True)
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        x, y = next(it)
    seconds = time.perf_counter() - t0
    assert x.shape == (batch_size, 16000) and x.dtype == torch.float32
    del it, loader
    return batches * batch_size / seconds


def prepared_corpus(root: Path, files: int) -> None:
    """A generated Speech Commands-layout corpus of ``files`` clips under ``root``, prepared once."""
    generate(root, files)
    recipe = get_recipe("speechcommands")
    if not recipe.manifest_path(root).exists():
        recipe.prepare(root, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="/tmp/helix-bench-speechcommands")
    parser.add_argument("--files", type=int, default=105_829)
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--batches", type=int, default=600)
    parser.add_argument("--cold", action="store_true", help="evict the corpus from the page cache before each run")
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    root = Path(args.root)
    prepared_corpus(root, args.files)
    train, _, _, names = build_task("speechcommands", root, 1.0)
    lines = []
    for workers in args.workers:
        if args.cold:
            evict(root)
        rate = measure(train, workers, args.batches, warmup=20)
        print(f"{workers} workers: {rate:,.0f} clips/s ({args.batches} batches of 32 after 20 warm-up)")
        lines.append(f"  - {workers} worker(s): **{rate:,.0f} clips/s**")
    if args.write_results:
        when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        cache = "evicted from the page cache before each run" if args.cold else "page cache warm"
        record("bench_data_loading", f"""## Loading one-second clips (DataLoader, batch 32)

- machine: {machine()}
- date: {when}
- command: `python {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}`
- data: the training split ({len(train):,} clips) of the generated corpus above, {cache};
  `build_task("speechcommands", root, 1.0)` + `build_dataloader(batch_size=32, shuffle=True)`,
  timed over {args.batches} batches after 20 warm-up batches; target: 2,000 clips/s with 2 workers
""" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
