"""Training-loop overhead on GPU: a bare training step on tensors already on the device vs. the
same step through the real ``Trainer`` (DataLoader from host memory, pinned copies, augmentation,
mixup, autocast, clipping, the finite-loss check, logging). 5-s clips, B=32, paper-size models.
Asserts nothing; prints a Markdown table and writes it (and JSON) to $OUT.

    PYTHONPATH=src python benchmarks/bench_loop_overhead.py                # all three backbones
    PYTHONPATH=src python benchmarks/bench_loop_overhead.py --models helix_raw --steps 30
    .venv/bin/python benchmarks/bench_loop_overhead.py --device cpu --models helix_raw --seconds 0.5 \
        --batch 4 --steps 3 --workers 0                                  # a CPU smoke run of the script

Needs torch, numpy, pyyaml and tqdm (soundfile/soxr are not used: the data
are random waveforms held in memory).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path


import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from helix.models import create_model  # noqa: E402
from helix.training.config_io import load_config  # noqa: E402
from helix.training.loaders import RunData  # noqa: E402
from helix.training.loop import Trainer  # noqa: E402

SR, CLASSES = 16000, 50


class MemoryClips(torch.utils.data.Dataset):
    """Random waveforms kept in host memory: items (waveform (T,), label)."""

    def __init__(self, n: int, seconds: float, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.wave = 0.1 * torch.randn(n, int(seconds * SR), generator=g)
        self.label = torch.randint(0, CLASSES, (n,), generator=g)

    def __len__(self):
        return len(self.label)

    def __getitem__(self, i):
        return self.wave[i], int(self.label[i])


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bare_step_ms(name: str, batch: int, seconds: float, steps: int, dtype, device: str) -> float:
    """Forward + backward + clip + AdamW on device-resident tensors (the floor for the loop)."""
    torch.manual_seed(0)
    model = create_model(name, CLASSES).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.05)
    wave = 0.1 * torch.randn(batch, int(seconds * SR), device=device)
    labels = torch.randint(0, CLASSES, (batch,), device=device)

    def step():
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            logits = model(wave)
        F.cross_entropy(logits.float(), labels).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return 1000 * (time.perf_counter() - t0) / steps


def loop_step_ms(name: str, batch: int, seconds: float, steps: int, workers: int, augment: bool,
                 out: Path, device: str) -> float:
    """Mean optimizer-step time of the Trainer's second epoch (the first pays for compilation)."""
    shutil.rmtree(out, ignore_errors=True)  # a scratch run folder; the Trainer never overwrites one
    cfg = load_config(None, [f"model.name={name}", f"optim.batch_size={batch}", "optim.epochs=2",
                             f"data.clip_seconds={seconds}", f"data.num_workers={workers}", f"device={device}",
                             f"augment.enabled={str(augment).lower()}", f"out_dir={out}", "log_every_steps=1000"])
    data = RunData(MemoryClips(batch * steps, seconds), MemoryClips(batch, seconds, 1),
                   MemoryClips(batch, seconds, 2), [str(i) for i in range(CLASSES)], "synthetic")
    Trainer(cfg, data=data, verbose=False).fit()
    epoch2 = [json.loads(line) for line in open(out / "metrics.jsonl")][1]
    return 1000 * epoch2["epoch_seconds"] / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="pure_mamba_raw,helix_raw,pure_attention_raw")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--device", default="cuda", help="cuda (the measurement) or cpu (a smoke run)")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_loop_overhead.py measures GPU overhead; no CUDA device is visible (--device cpu?)")
    out = Path(os.environ.get("OUT", "/tmp/helix-bench-loop"))
    out.mkdir(parents=True, exist_ok=True)
    # the Trainer's precision=auto: bf16 where supported, fp16 otherwise, fp32 on CPU
    dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if args.device == "cuda" else None
    rows = []
    for name in args.models.split(","):
        bare = bare_step_ms(name, args.batch, args.seconds, args.steps, dtype, args.device)
        plain, full = (loop_step_ms(name, args.batch, args.seconds, args.steps, args.workers, aug,
                                    out / f"{name}-{'aug' if aug else 'noaug'}", args.device) for aug in (False, True))
        rows.append(dict(model=name, bare_ms=bare, loop_ms=plain, loop_aug_ms=full,
                         overhead_pct=100 * (plain / bare - 1), overhead_aug_pct=100 * (full / bare - 1)))
        print(rows[-1], flush=True)
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    head = (f"device: {where}, torch {torch.__version__}, {dtype or 'fp32'}, B={args.batch}, "
            f"{args.seconds:g}-s clips, {args.steps} steps, {args.workers} loader workers, "
            f"{time.strftime('%Y-%m-%d')}\n\n| model | bare step (ms) | loop, no aug (ms) | loop + aug/mixup (ms) "
            f"| overhead | overhead with aug |\n|---|---:|---:|---:|---:|---:|\n")
    table = head + "".join(f"| {r['model']} | {r['bare_ms']:.1f} | {r['loop_ms']:.1f} | {r['loop_aug_ms']:.1f} | "
                           f"{r['overhead_pct']:+.1f}% | {r['overhead_aug_pct']:+.1f}% |\n" for r in rows)
    print("\n" + table)
    (out / "loop_overhead.md").write_text(table)
    (out / "loop_overhead.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
