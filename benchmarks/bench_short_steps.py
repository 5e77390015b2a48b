"""Short clips through the real Trainer, eager vs CUDA-graph captured steps (issue 13).

For each model and clip length: the mean optimizer-step time of the Trainer's second epoch
(DataLoader from host memory, pinned copies, augmentation + mixup, bf16 autocast, clipping, AdamW,
the device-side finite guard), with ``cuda_graphs=off`` and ``on``, and the kernel launches per step
(CUDA runtime/driver launch calls seen by the profiler over a few steady steps; a graph replay counts
one). ``--epoch-clips N`` also times one whole epoch of N one-second clips end to end (loader
included: the Speech Commands-sized check, 85k clips). Asserts nothing; prints Markdown tables and
writes them (and JSON) to $OUT.

    OUT=$OUT PYTHONPATH=src python benchmarks/bench_short_steps.py
    OUT=$OUT PYTHONPATH=src python benchmarks/bench_short_steps.py --models pure_mamba_raw --seconds 1 \\
        --epoch-clips 85000
    .venv/bin/python benchmarks/bench_short_steps.py --device cpu --models helix_raw --seconds 0.25 \\
        --batch 4 --steps 3 --workers 0                                    # a CPU smoke run of the script
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from helix.training.config_io import load_config
from helix.training.loaders import RunData
from helix.training.loop import Trainer

# the same in-memory random clips as the loop-overhead benchmark (this folder is on sys.path when a
# script in it runs)
from bench_loop_overhead import CLASSES, MemoryClips  # noqa: E402


def _config(name, batch, seconds, workers, graphs, out, device, epochs=2):
    shutil.rmtree(out, ignore_errors=True)  # a scratch run folder; the Trainer never overwrites one
    return load_config(None, [f"model.name={name}", f"optim.batch_size={batch}", f"optim.epochs={epochs}",
                              f"data.clip_seconds={seconds}", f"data.num_workers={workers}", f"device={device}",
                              f"cuda_graphs={graphs}", f"out_dir={out}", "log_every_steps=1000"])


def _data(n_train, seconds, batch):
    return RunData(MemoryClips(n_train, seconds), MemoryClips(batch, seconds, 1), MemoryClips(batch, seconds, 2),
                   [str(i) for i in range(CLASSES)], "synthetic")


def step_ms(name, batch, seconds, steps, workers, graphs, out, device) -> tuple[float, float]:
    """Mean optimizer-step time of the Trainer's second epoch (the first warms up and captures), and
    the share of that epoch the loop waited for the loader."""
    cfg = _config(name, batch, seconds, workers, graphs, out, device)
    Trainer(cfg, data=_data(batch * steps, seconds, batch), verbose=False).fit()
    epoch2 = [json.loads(line) for line in open(Path(out) / "metrics.jsonl")][1]
    return 1000 * epoch2["epoch_seconds"] / steps, epoch2["data_wait_frac"]


def launches_per_step(name, batch, seconds, workers, graphs, out, device, steps=4,
                      trace: Path | None = None) -> tuple[float | None, float | None]:
    """Kernel launch calls per optimizer step (CUDA only), after warm-up and capture, and the share of
    those steps' wall time the GPU was busy (kernel and copy time over wall time: well under 1 means
    the host or the loader, not the kernels, set the pace). ``trace``: also write the profiler's
    timeline there (Chrome trace JSON, for chrome://tracing or Perfetto)."""
    if device != "cuda":
        return None, None
    from torch.profiler import ProfilerActivity, profile

    cfg = _config(name, batch, seconds, workers, graphs, out, device, epochs=1)
    trainer = Trainer(cfg, data=_data(batch * (steps + 8), seconds, batch), verbose=False)
    trainer.setup()
    batches = iter(trainer.train_loader)
    for s in range(6):  # warm-up (3 eager), capture, replays
        trainer.step_fn(batches, s)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for s in range(6, 6 + steps):
            trainer.step_fn(batches, s)
        torch.cuda.synchronize()
        wall_us = 1e6 * (time.perf_counter() - start)
    trainer.logger.close()
    trainer._lock.release()
    if trace is not None:
        prof.export_chrome_trace(str(trace))
    names = ("cudaLaunchKernel", "cuLaunchKernel", "cuLaunchKernelEx", "cudaLaunchKernelExC", "cudaGraphLaunch")
    averages = prof.key_averages()
    n = sum(e.count for e in averages if e.key in names)
    busy_us = sum(e.self_device_time_total for e in averages)  # one stream: kernels and copies never overlap
    return n / steps, min(1.0, busy_us / wall_us)


def epoch_seconds(name, clips, batch, workers, graphs, out, device) -> dict:
    """One whole epoch of ``clips`` one-second clips, end to end (the second of two epochs)."""
    cfg = _config(name, batch, 1.0, workers, graphs, out, device)
    Trainer(cfg, data=_data(clips, 1.0, batch), verbose=False).fit()
    r = [json.loads(line) for line in open(Path(out) / "metrics.jsonl")][1]
    return {"epoch_seconds": r["epoch_seconds"], "clips_per_s": r["clips_per_s"], "data_wait_frac": r["data_wait_frac"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="pure_mamba_raw,helix_raw,pure_mamba_mel,helix_mel")
    p.add_argument("--seconds", default="1,5", help="comma-separated clip lengths")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--epoch-clips", type=int, default=0, help="also time one epoch of N 1-s clips (0: skip)")
    p.add_argument("--epoch-modes", default="off,on", help="cuda_graphs settings for --epoch-clips")
    p.add_argument("--modes", default="off,on", help="cuda_graphs settings of the step table (eager is 'off')")
    p.add_argument("--device", default="cuda", help="cuda (the measurement) or cpu (a smoke run)")
    p.add_argument("--trace", action="store_true", help="write each row's profiler timeline to $OUT")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_short_steps.py measures GPU steps; no CUDA device is visible (--device cpu?)")
    out = Path(os.environ.get("OUT", "/tmp/helix-bench-short"))
    out.mkdir(parents=True, exist_ok=True)
    scratch = out / "runs"
    graph_modes = ("off", "on") if args.device == "cuda" else ("off",)
    step_modes = [m for m in args.modes.split(",") if m in graph_modes]
    rows = []
    for seconds in (float(s) for s in args.seconds.split(",") if s):
        for name in args.models.split(","):
            row = {"model": name, "seconds": seconds}
            for g in step_modes:
                row[f"ms_{g}"], row[f"wait_{g}"] = step_ms(name, args.batch, seconds, args.steps, args.workers, g, scratch / "run",
                                         args.device)
                trace = out / f"trace_{name}_{seconds:g}s_graphs_{g}.json" if args.trace else None
                row[f"launches_{g}"], row[f"gpu_busy_{g}"] = launches_per_step(
                    name, args.batch, seconds, args.workers, g, scratch / "prof", args.device, trace=trace)
            rows.append(row)
            print(row, flush=True)
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    head = (f"device: {where}, torch {torch.__version__}, B={args.batch}, {args.steps} steps per epoch, "
            f"{args.workers} loader workers, augmentation + mixup on, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n"
            "'loader wait': the share of the epoch the loop spent waiting for the next batch; 'GPU busy': "
            "kernel and copy time over wall time of 4 profiled steps\n\n"
            "| model | clip (s) | step, eager (ms) | step, CUDA graphs (ms) | speed-up | launches/step, eager "
            "| launches/step, graphs | loader wait, eager | loader wait, graphs | GPU busy, eager | GPU busy, graphs |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")

    def cell(v, fmt):
        return "-" if v is None else format(v, fmt)

    def speedup(r):
        return r["ms_off"] / r["ms_on"] if r.get("ms_on") and r.get("ms_off") else None

    table = head + "".join(
        f"| {r['model']} | {r['seconds']:g} | {cell(r.get('ms_off'), '.1f')} | {cell(r.get('ms_on'), '.1f')} | "
        f"{cell(speedup(r), '.2f')}x | {cell(r.get('launches_off'), '.0f')} | "
        f"{cell(r.get('launches_on'), '.0f')} | {cell(r.get('wait_off'), '.0%')} | {cell(r.get('wait_on'), '.0%')} | "
        f"{cell(r.get('gpu_busy_off'), '.0%')} | {cell(r.get('gpu_busy_on'), '.0%')} |\n"
        for r in rows)
    if args.epoch_clips:
        name = args.models.split(",")[0]
        table += f"\nOne epoch of {args.epoch_clips} one-second clips, {name}, B={args.batch}, end to end:\n\n"
        table += "| cuda_graphs | epoch (s) | clips/s | loader wait |\n|---|---:|---:|---:|\n"
        for g in (m for m in args.epoch_modes.split(",") if m in graph_modes):
            e = epoch_seconds(name, args.epoch_clips, args.batch, args.workers, g, scratch / "epoch", args.device)
            rows.append({"model": name, "epoch_clips": args.epoch_clips, "cuda_graphs": g, **e})
            table += f"| {g} | {e['epoch_seconds']:.1f} | {e['clips_per_s']:.0f} | {e['data_wait_frac']:.0%} |\n"
            print(rows[-1], flush=True)
    print("\n" + table)
    (out / "short_steps.md").write_text(table)
    (out / "short_steps.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
