"""Data-parallel scaling: training throughput of the real Trainer on 1 vs 2 GPUs (torchrun, NCCL),
synthetic waveforms in host memory (no dataset, no soundfile/soxr). Asserts nothing.

One line on a 2-GPU host (runs torchrun with 1 and then 2 processes and prints the table):

    PYTHONPATH=src python benchmarks/ddp_scaling.py

    .venv/bin/python benchmarks/ddp_scaling.py --device cpu --models helix_raw --seconds 0.5 --batch 4 \
        --steps 3 --workers 0        # a CPU smoke run of the script (2 gloo processes)

Two regimes per model: the same global batch split over the GPUs (strong scaling, what a config
file means: ``optim.batch_size`` is global) and the per-GPU batch held fixed (weak scaling).
Throughput = clips/s of the second epoch's optimizer steps (the first pays for compilation).
Each with ``cuda_graphs`` off and on (``--graphs``; a captured DDP step averages the gradients by
one NCCL all-reduce inside the graph). Writes ddp_scaling.md / .json to $OUT (default
/tmp/helix-ddp-scaling).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

OUT = Path(os.environ.get("OUT", "/tmp/helix-ddp-scaling"))


def worker(args) -> None:
    """Runs under torchrun: one Trainer over in-memory random clips; rank 0 appends a JSON line."""
    from bench_loop_overhead import CLASSES, MemoryClips

    from helix.training.config_io import load_config
    from helix.training.loaders import RunData
    from helix.training.loop import Trainer

    world = int(os.environ.get("WORLD_SIZE", "1"))
    out = OUT / f"{args.model}-b{args.batch}-w{world}-g{args.graphs}"
    cfg = load_config(None, [f"model.name={args.model}", f"optim.batch_size={args.batch}", "optim.epochs=2",
                             f"data.clip_seconds={args.seconds}", f"data.num_workers={args.workers}",
                             f"device={args.device}", f"cuda_graphs={args.graphs}", f"out_dir={out}",
                             "log_every_steps=1000"])
    n = args.batch * args.steps
    data = RunData(MemoryClips(n, args.seconds), MemoryClips(args.batch, args.seconds, 1),
                   MemoryClips(args.batch, args.seconds, 2), [str(i) for i in range(CLASSES)], "synthetic")
    trainer = Trainer(cfg, data=data, verbose=False)
    trainer.fit()
    if trainer.env.is_main:
        epoch2 = [json.loads(line) for line in open(out / "metrics.jsonl")][1]
        row = dict(model=args.model, graphs="on" if trainer.graphs else "off", gpus=world, global_batch=args.batch, per_gpu_batch=args.batch // world,
                   clips_per_s=n / epoch2["epoch_seconds"], step_ms=1000 * epoch2["epoch_seconds"] / args.steps)
        with open(OUT / "rows.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
    torch.distributed.destroy_process_group() if torch.distributed.is_initialized() else None


def launch(args) -> None:
    """Run every (model, GPUs, batch) case through torchrun, then print the table."""
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "rows.jsonl").unlink(missing_ok=True)
    gpus = [g for g in (1, 2) if args.device == "cpu" or g <= torch.cuda.device_count()]
    src = str(Path(__file__).resolve().parents[1] / "src")  # before what the caller's PYTHONPATH holds
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])), OUT=str(OUT))
    for model in args.models.split(","):
        for graphs in args.graphs.split(","):
            for g in gpus:
                for batch in sorted({args.batch, args.batch * g}):  # global batch fixed, per-GPU batch fixed
                    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={g}",
                           __file__, "--worker", "--model", model, "--batch", str(batch), "--seconds",
                           str(args.seconds), "--steps", str(args.steps), "--workers", str(args.workers),
                           "--device", args.device, "--graphs", graphs]
                    shutil.rmtree(OUT / f"{model}-b{batch}-w{g}-g{graphs}", ignore_errors=True)  # scratch run folder
                    print("$", " ".join(cmd[2:]), flush=True)
                    rc = subprocess.run(cmd, env=env).returncode
                    if rc:
                        print(f"   failed with exit status {rc}", flush=True)
    rows = [json.loads(line) for line in open(OUT / "rows.jsonl")] if (OUT / "rows.jsonl").exists() else []
    base = {(r["model"], r["graphs"], r["per_gpu_batch"]): r["clips_per_s"] for r in rows if r["gpus"] == 1}
    where = (f"{torch.cuda.get_device_name()} x {torch.cuda.device_count()}" if args.device == "cuda"
             else f"CPU ({os.cpu_count()} cores, gloo)")
    head = (f"device: {where}, torch {torch.__version__}, "
            f"{args.seconds:g}-s clips, {args.steps} steps, {time.strftime('%Y-%m-%d')}\n\n"
            "| model | CUDA graphs | processes | global batch | per-process batch | step (ms) | clips/s "
            "| speed-up vs 1, same per-process batch |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for r in rows:
        ref = base.get((r["model"], r["graphs"], r["per_gpu_batch"]))
        speedup = f"{r['clips_per_s'] / ref:.2f}x" if ref and r["gpus"] > 1 else "-"
        lines.append(f"| {r['model']} | {r['graphs']} | {r['gpus']} | {r['global_batch']} | {r['per_gpu_batch']} | "
                     f"{r['step_ms']:.1f} | {r['clips_per_s']:.1f} | {speedup} |\n")
    table = head + "".join(lines)
    print("\n" + table)
    (OUT / "ddp_scaling.md").write_text(table)
    (OUT / "ddp_scaling.json").write_text(json.dumps(rows, indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="pure_mamba_raw,helix_raw")
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=32, help="global batch of the 1-GPU run")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per epoch")
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers per GPU")
    p.add_argument("--device", default="cuda", help="cuda (the measurement) or cpu (a smoke run)")
    p.add_argument("--graphs", default="off,on",
                   help="cuda_graphs settings to run, comma-separated (the table says what each run did)")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("ddp_scaling.py measures GPUs; no CUDA device is visible (--device cpu?)")
    worker(args) if args.worker else launch(args)


if __name__ == "__main__":
    main()
