"""Issue 12: does length-bucketed training keep accuracy? ``data.batching=fixed`` (every clip zero-padded
or cropped to one length, the paper's protocol) against ``data.batching=bucket`` (each clip at its own
length, batches of similar lengths, the model told where each clip ends), trained end to end with the
real CLI on a real folder of WAV files and scored on the same held-out test split.

    .venv/bin/python benchmarks/bench_varlen_accuracy.py [--clips 600] [--epochs 8] [--seeds 0,1,2]
        [--models helix_mel,pure_mamba_raw] [--corpus librispeech] [--out DIR]

Steps, each through the command line a user would type:
1. a corpus of ``--clips`` mono 16 kHz WAV files in class folders (soundfile), durations drawn like
   LibriSpeech train-clean-100 scaled by 0.1 (0.2-2.5 s, most 1.2-1.6 s; ``--corpus urbansound8k``:
   83% exactly 1 s, the rest 0.1-1 s, UrbanSound8K's shape at a quarter of its length);
2. ``helix data prepare folder --root DIR --validation 0.15 --test 0.25`` (one seeded stratified split);
3. for every model x seed x protocol, ``helix train --config folder --data-root DIR --threads 1`` with
   ``data.clip_seconds`` = the longest clip rounded up to 0.1 s for both protocols (so only the batching
   differs; the preset's default for bucket would crop at the 90th percentile), ``model.num_layers=2``,
   ``model.overrides={d_model: 32, d_state: 8}``, ``optim.lr`` = ``--lr`` (2e-3: the preset's 3e-4 learns
   too little in a few epochs), ``data.num_workers=0 data.cache=memory`` (no worker processes on a
   shared 2-core machine); the rest is the preset (augmentation, mixup, batch 16, cosine schedule).
   Its ``summary.json`` and ``metrics.jsonl`` are read.

The five classes are carried by content present throughout each clip, with parameters that overlap
between classes, random phase and gain, and coloured background noise at 0-15 dB SNR, so short clips
are ambiguous: a harmonic tone at f0 110-320 Hz, one at 280-800 Hz, band noise centred at 500-1500 Hz,
the same noise amplitude-modulated at 2-5 Hz (a 0.2 s clip holds under one period), a click train.

Reported per model: mean +- sample std (ddof=1) over seeds of the test accuracy of the best-validation
epoch (the honest number), the best test accuracy over epochs (paper protocol, optimistic), the mean
training epoch time and the padding fraction of the training epoch (fixed: exact from the manifest
lengths; bucket: ``BucketBatchSampler.padding_fraction`` of the training split's sampler, built as a run
builds it, with the first seed). Also the best validation accuracy and the last epoch's training
accuracy, which show a model that fits its training batches but not the held-out clips. Prints
Markdown, writes ``accuracy.md`` and ``accuracy.json`` to ``--out`` (default ``$OUT`` or
``$TMPDIR/helix_varlen_accuracy``). Asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000
CLASSES = ("low_tone", "high_tone", "band_noise", "am_noise", "clicks")
BATCH = 16  # the folder preset's optim.batch_size


# -- the corpus ----------------------------------------------------------------------------------
def durations(corpus: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """(n,) seconds and the largest duration the distribution allows."""
    if corpus == "urbansound8k":
        return np.where(rng.random(n) < 0.83, 1.0, rng.uniform(0.1, 1.0, n)), 1.0
    body = np.clip(rng.normal(1.4, 0.25, n), 0.2, 2.5)
    tail = rng.uniform(0.2, 1.2, n)
    return np.where(rng.random(n) < 0.8, body, tail), 2.5


def coloured_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """(n,) unit-RMS noise with power spectrum ~ 1/f^exponent (0 white, 1 pink, 2 brown)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n, 1 / SR), 20.0)
    x = np.fft.irfft(spec / f ** (exponent / 2), n)
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-12)


def band_noise(n: int, centre: float, rng: np.random.Generator) -> np.ndarray:
    """(n,) unit-RMS white noise kept within [centre / 1.5, centre * 1.5] Hz."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    spec[(f < centre / 1.5) | (f > centre * 1.5)] = 0
    x = np.fft.irfft(spec, n)
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-12)


def harmonics(t: np.ndarray, f0: float, orders, rng: np.random.Generator) -> np.ndarray:
    """Sum of sin(2 pi k f0 t + random phase) / k over the harmonic ``orders``."""
    return sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k for k in orders)


def clip(label: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """(T,) float32 waveform of class ``label``, peak at most 0.9."""
    n = max(int(seconds * SR), 160)
    t = np.arange(n) / SR
    if label == 0:
        x = harmonics(t, rng.uniform(110, 320), range(1, 7), rng)
    elif label == 1:
        x = harmonics(t, rng.uniform(280, 800), range(1, 7), rng)
    elif label == 4:  # a click train: broadband, 6-14 clicks a second from a random start
        period = int(SR / rng.uniform(6, 14))
        x = np.zeros(n)
        x[rng.integers(0, period)::period] = 1.0
        x = np.convolve(x, np.exp(-np.arange(80) / 12) * rng.standard_normal(80), mode="same")
    else:
        x = band_noise(n, rng.uniform(500, 1500), rng)
        if label == 3:  # the same noise, amplitude-modulated at 2-5 Hz
            x *= 1 - rng.uniform(0.7, 0.95) * 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(2, 5) * t
                                                                 + rng.uniform(0, 2 * np.pi)))
    x = x / (np.sqrt(np.mean(x ** 2)) + 1e-12)
    snr_db = rng.uniform(0, 15)
    x = x + coloured_noise(n, rng.uniform(0, 2), rng) * 10 ** (-snr_db / 20)
    x = x / np.abs(x).max() * rng.uniform(0.1, 0.9)
    return x.astype(np.float32)


def make_corpus(root: Path, corpus: str, clips: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """``root/<class>/<i>.wav`` (16-bit PCM); returns the drawn durations and the corpus maximum."""
    rng = np.random.default_rng(seed)
    secs, max_s = durations(corpus, clips, rng)
    for i, s in enumerate(secs):
        label = i % len(CLASSES)
        path = root / CLASSES[label] / f"{i:05d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, clip(label, float(s), rng), SR, subtype="PCM_16")
    return secs, max_s


# -- the runs ------------------------------------------------------------------------------------
def helix(*args: str, log: Path) -> None:
    """``python -m helix.cli ARGS`` (the installed ``helix`` command), output to ``log``; raises on failure."""
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "helix.cli", *args], stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise RuntimeError(f"helix {' '.join(args)} failed (exit {proc.returncode}); see {log}")


def train(root: Path, out: Path, model: str, batching: str, seed: int, clip_s: float, args) -> dict:
    run = out / "runs" / f"{model}_{batching}_s{seed}"
    t0 = time.perf_counter()
    helix("train", "--config", "folder", "--data-root", str(root), "--out", str(run), "--model", model,
          "--epochs", str(args.epochs), "--seed", str(seed), "--threads", "1", "--device", "cpu",
          f"data.batching={batching}", f"data.clip_seconds={clip_s}", "data.num_workers=0", "data.cache=memory",
          f"optim.lr={args.lr}", "model.num_layers=2", "model.overrides={d_model: 32, d_state: 8}",
          log=out / "logs" / f"{run.name}.log")
    summary = json.loads((run / "summary.json").read_text())
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"model": model, "batching": batching, "seed": seed,
            "test_acc_at_best_val": summary["test_acc_at_best_val"], "best_val_epoch": summary["best_val_epoch"],
            "best_test_acc": summary["best_test_acc"], "final_test_acc": summary["final_test_acc"],
            "best_val_acc": summary["best_val_acc"], "last_train_acc": epochs[-1]["train_acc"],
            "epoch_seconds": float(np.mean([e["epoch_seconds"] for e in epochs])),
            "wall_seconds": time.perf_counter() - t0}


def padding_fractions(root: Path, clip_s: float, seed: int) -> dict:
    """Padding share of a training epoch: fixed (every clip at ``clip_s``) and bucket (the run's sampler)."""
    from helix.data.batching import BucketBatchSampler, bucket_lengths
    from helix.training.config import DataConfig
    from helix.training.loaders import BUCKET_MULTIPLE, build_run_data, sample_counts

    cfg = DataConfig(name="folder", root=str(root), clip_seconds=clip_s, batching="bucket")
    lengths = sample_counts(build_run_data(cfg).train)
    clip_n = int(round(clip_s * SR))
    fixed = 1 - np.minimum(lengths, clip_n).sum() / (clip_n * len(lengths))
    buckets = bucket_lengths(lengths, cfg.num_buckets, BUCKET_MULTIPLE)
    bucket = BucketBatchSampler(lengths, BATCH, buckets, seed=seed).padding_fraction()
    return {"fixed": float(fixed), "bucket": float(bucket), "train_clips": int(len(lengths))}


def mean_std(xs) -> tuple[float, float]:
    xs = np.asarray(xs, dtype=float)
    return float(xs.mean()), float(xs.std(ddof=1)) if len(xs) > 1 else 0.0


def verdict(fixed: list[float], bucket: list[float]) -> str:
    """Words for bucket against fixed: a difference of means inside the combined seed noise
    (the standard error of the difference, sqrt(s_f^2/n + s_b^2/n)) times two is 'unchanged'."""
    (mf, sf_), (mb, sb) = mean_std(fixed), mean_std(bucket)
    se = np.sqrt(sf_ ** 2 / len(fixed) + sb ** 2 / len(bucket))
    diff = mb - mf
    if abs(diff) <= 2 * se:
        return f"unchanged within noise ({diff * 100:+.1f} pts, 2 SE = {2 * se * 100:.1f})"
    return f"{'better' if diff > 0 else 'worse'} ({diff * 100:+.1f} pts, 2 SE = {2 * se * 100:.1f})"


def table(rows: list[dict], pad: dict, args) -> str:
    pct = lambda xs: "{:.1f} ± {:.1f}".format(*(100 * v for v in mean_std(xs)))  # noqa: E731
    out = ["| model | batching | test acc @ best val (%) | best test, paper protocol (%) | best val acc (%) "
           "| train acc, last epoch (%) | epoch (s) | padding |", "|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for model in args.models:
        acc = {}
        for b in ("fixed", "bucket"):
            rs = [r for r in rows if r["model"] == model and r["batching"] == b]
            acc[b] = [r["test_acc_at_best_val"] for r in rs]
            out.append(f"| {model} | {b} | {pct(acc[b])} | {pct([r['best_test_acc'] for r in rs])} | "
                       f"{pct([r['best_val_acc'] for r in rs])} | {pct([r['last_train_acc'] for r in rs])} | {np.mean([r['epoch_seconds'] for r in rs]):.1f} | {pad[b] * 100:.1f}% |")
        verdicts.append(f"- {model}: bucket vs fixed, test acc @ best val: {verdict(acc['fixed'], acc['bucket'])}")
    return "\n".join(out + [""] + verdicts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=600)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--models", default="helix_mel,pure_mamba_raw")
    p.add_argument("--corpus", choices=("librispeech", "urbansound8k"), default="librispeech")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--out", default=os.environ.get("OUT") or str(Path(tempfile.gettempdir()) / "helix_varlen_accuracy"))
    args = p.parse_args()
    args.models = args.models.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out).resolve() / args.corpus
    root = out / "corpus"
    (out / "logs").mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()
    t0 = time.perf_counter()

    if not (root / "helix").exists():
        make_corpus(root, args.corpus, args.clips)
        helix("data", "prepare", "folder", "--root", str(root), "--no-progress", "--workers", "1",
              "--validation", "0.15", "--test", "0.25", log=out / "logs" / "prepare.log")
    secs, _ = durations(args.corpus, args.clips, np.random.default_rng(0))  # the corpus's own draw
    clip_s = float(np.ceil(secs.max() * 10) / 10)  # its longest clip, rounded up to 0.1 s
    pad = padding_fractions(root, clip_s, seeds[0])
    rows = []
    for model in args.models:
        for seed in seeds:
            for batching in ("fixed", "bucket"):  # interleaved, so a load change hits both protocols
                rows.append(train(root, out, model, batching, seed, clip_s, args))
                r = rows[-1]
                print(f"{model} {batching} seed {seed}: test@best-val {r['test_acc_at_best_val']:.3f} "
                      f"(epoch {r['best_val_epoch']}), epoch {r['epoch_seconds']:.1f}s", flush=True)

    head = (f"{datetime.date.today()}, {platform.node()} ({os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
            f"torch {importlib.metadata.version('torch')}, CPU, 1 thread per run), "
            f"corpus {args.corpus}: {args.clips} clips, {len(CLASSES)} classes (chance {100 / len(CLASSES):.0f}%), "
            f"{pad['train_clips']} train clips, clip_seconds {clip_s:g} for both, {args.epochs} epochs, "
            f"lr {args.lr:g}, seeds {seeds}; load average at start {load0[0]:.2f}, at end {os.getloadavg()[0]:.2f}; "
            f"wall {time.perf_counter() - t0:.0f} s")
    text = head + "\n\n" + table(rows, pad, args)
    print(text)
    (out / "accuracy.md").write_text(text + "\n")
    (out / "accuracy.json").write_text(json.dumps({"args": vars(args), "padding": pad, "runs": rows,
                                                   "load_start": load0, "header": head}, indent=1))


if __name__ == "__main__":
    main()
