"""Long-file inference on CPU: a one-hour 16 kHz recording through full-size HELIX-raw in sliding windows.

Measures wall time, CPU time, real-time factor (processing time / audio duration; < 1 is faster than
real time) and peak resident memory of the process that predicts. The file is generated once in
/tmp (never in the repository) and streamed from disk; the measurement runs in a fresh subprocess,
so the peak RSS is that of prediction alone. Weights are random (speed and memory do not depend on
training); 1313 classes as VoxPopuli, the 6.7M-parameter configuration.

    python benchmarks/bench_predict_long.py                          # 1 h, 5 s windows, 2.5 s hop
    python benchmarks/bench_predict_long.py --hop 5                  # no overlap
    python benchmarks/bench_predict_long.py --minutes 5 --batch-size 4   # quick look

Prints one JSON line per run and appends it to /tmp/helix_bench/results.jsonl. Benchmarks assert
nothing; record the figures with machine, date and command in benchmarks/RESULTS-inference.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

WORKDIR = Path("/tmp/helix_bench")
SR = 16000


def make_long_file(path: Path, seconds: float, seed: int = 0) -> None:
    """Write ``seconds`` of 16 kHz audio (noise bed, tone bursts, gaps) block by block, as 16-bit FLAC."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".part.flac")
    with sf.SoundFile(tmp, "w", SR, 1, subtype="PCM_16") as f:
        for start in range(0, int(seconds), 60):  # one minute at a time: bounded memory here too
            n = int(min(60, seconds - start) * SR)
            t = np.arange(n) / SR
            bed = 0.05 * rng.standard_normal(n)
            tone = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t) * (np.sin(2 * np.pi * 0.1 * t) > 0.3)
            f.write((bed + tone).astype(np.float32))
    tmp.replace(path)


def make_checkpoint(path: Path, num_classes: int) -> None:
    import torch

    from helix.models import create_model, model_defaults
    from helix.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("helix_raw", num_classes)
    save_checkpoint(path, {"model": {"name": "helix_raw", "kwargs": model_defaults("helix_raw"),
                                     "num_classes": num_classes},
                           "class_names": [f"class_{i}" for i in range(num_classes)], "sample_rate": SR,
                           "clip_seconds": 5.0, "model_state": model.state_dict()})


def measure(args) -> dict:
    """Runs in the subprocess: load, predict the whole file, report times and peak RSS."""
    import torch

    import helix

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    predictor = helix.load(args.checkpoint)
    predictor.batch_size = args.batch_size
    load_s = time.perf_counter() - t0
    params = sum(p.numel() for p in predictor.model.parameters())
    cpu0, t0 = time.process_time(), time.perf_counter()
    pred = predictor.predict(args.audio, window_seconds=args.window, hop_seconds=args.hop, top_k=3)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"audio_seconds": pred.duration, "windows": pred.num_windows, "window_s": args.window,
            "hop_s": args.hop, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
            "params": params, "load_s": round(load_s, 2), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "rtf_wall": round(wall / pred.duration, 4), "rtf_cpu_per_core": round(cpu / args.threads / pred.duration, 4),
            "s_per_window": round(wall / pred.num_windows, 4), "peak_rss_mib": round(peak_kib / 1024, 1),
            "top1": pred.top[0][0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=60.0, help="audio length (default 60)")
    p.add_argument("--window", type=float, default=5.0, help="window seconds (default 5, the training clip)")
    p.add_argument("--hop", type=float, default=2.5, help="hop seconds (default 2.5: 50%% overlap)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--classes", type=int, default=1313, help="head size (default 1313, VoxPopuli: the 6.7M model)")
    p.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    p.add_argument("--audio", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        print(json.dumps(measure(args)))
        return
    WORKDIR.mkdir(parents=True, exist_ok=True)
    audio = WORKDIR / f"long_{args.minutes:g}min.flac"
    ckpt = WORKDIR / f"helix_raw_{args.classes}.pt"
    if not audio.exists():
        t0 = time.perf_counter()
        make_long_file(audio, args.minutes * 60)
        print(f"generated {audio} ({audio.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.0f} s",
              file=sys.stderr)
    if not ckpt.exists():
        make_checkpoint(ckpt, args.classes)
    load_before = os.getloadavg()
    cmd = [sys.executable, __file__, "--measure", "--checkpoint", str(ckpt), "--audio", str(audio),
           "--window", str(args.window), "--hop", str(args.hop), "--batch-size", str(args.batch_size),
           "--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result.update(date=time.strftime("%Y-%m-%d %H:%M"), machine=f"{platform.processor() or platform.machine()}, "
                  f"{os.cpu_count()} cores", loadavg_before=[round(x, 2) for x in load_before],
                  loadavg_after=[round(x, 2) for x in os.getloadavg()], command=" ".join(sys.argv))
    print(json.dumps(result))
    with open(WORKDIR / "results.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
