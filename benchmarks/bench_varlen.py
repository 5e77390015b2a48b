"""Issue 12: padding fraction and epoch time, ``fixed`` (every clip padded/cropped to one length)
against ``bucket`` (BucketBatchSampler + PadCollate, ``model(wave, lengths)``), on synthetic corpora.

    .venv/bin/python benchmarks/bench_varlen.py [--clips 2000] [--timed-batches 6] [--batch 8]
        [--buckets 6] [--scale 0.1] [--device cpu] [--backend reference]

Durations (seconds) are drawn to follow two corpora (approximations of their published statistics,
no download):
- ``urbansound8k``: 8732 clips cut from longer recordings at most 4 s; ~83% are exactly 4 s, the
  rest spread over 0.1-4 s (mean ~3.6 s);
- ``librispeech``: utterances of train-clean-100, 1-24.5 s, most 11-16 s (mean ~12.7 s): a clipped
  normal(14, 2.5) for 80% and uniform(1, 12) for the rest.

The padding fraction is exact over a whole epoch of ``--clips`` clips. Epoch time is measured on
``--timed-batches`` batches of each protocol (a training step: forward, cross-entropy, backward of a
small Pure Mamba raw model) and scaled to the epoch's batch count; ``--scale`` shrinks every
duration (default 0.1) so a CPU run takes minutes: padding fractions do not depend on it, and step
time is linear in tokens for the scan. ``fixed`` uses the corpus maximum (4 s, 24.5 s) as clip
length. Prints Markdown. Asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time

import numpy as np
import torch

from helix.data.batching import BucketBatchSampler, PadCollate, bucket_lengths
from helix.models import create_model

SR = 16000


def durations(corpus: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if corpus == "urbansound8k":
        full = rng.random(n) < 0.83
        return np.where(full, 4.0, rng.uniform(0.1, 4.0, n)), 4.0
    body = np.clip(rng.normal(14.0, 2.5, n), 1.0, 24.5)
    tail = rng.uniform(1.0, 12.0, n)
    return np.where(rng.random(n) < 0.8, body, tail), 24.5


def step_time(model, batches, device) -> float:
    """Mean seconds per training step over the timed batches, after one untimed pass over them all
    (compilation, autotuning, allocator warm-up for every shape)."""
    times = []
    for wave, lengths in batches + batches:
        wave = wave.to(device)  # lengths stay on the CPU, as a collate returns them: no sync to check them
        labels = torch.zeros(wave.shape[0], dtype=torch.long, device=device)
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(wave, lengths), labels)
        loss.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.mean(times[len(batches):]))


def run(corpus: str, args) -> dict:
    rng = np.random.default_rng(0)
    secs, max_s = durations(corpus, args.clips, rng)
    n = np.maximum((secs * args.scale * SR).astype(np.int64), 320)  # at least 2 raw tokens
    max_len = int(max_s * args.scale * SR)
    # fixed: every clip padded (or cropped) to the maximum
    fixed_pad = 1 - np.minimum(n, max_len).sum() / (max_len * len(n))
    fixed_batches = len(n) // args.batch
    buckets = bucket_lengths(n, args.buckets, multiple=160, max_length=max_len)  # whole raw tokens
    sampler = BucketBatchSampler(np.minimum(n, max_len), args.batch, buckets, seed=0)
    bucket_pad = sampler.padding_fraction()
    torch.manual_seed(0)
    model = create_model("pure_mamba_raw", num_classes=10, d_model=args.d_model, d_state=8,
                         scan_backend=args.backend).to(args.device)
    fixed = [(torch.randn(args.batch, max_len) * 0.1, None) for _ in range(args.timed_batches)]
    collate = PadCollate(buckets)
    chosen = sampler.global_batches()
    pick = np.random.default_rng(1).choice(len(chosen), size=min(args.timed_batches, len(chosen)), replace=False)
    bucketed = []
    for i in pick:
        wave, _, lengths = collate([(torch.randn(int(min(n[j], max_len))) * 0.1, 0) for j in chosen[i]])
        bucketed.append((wave, lengths))
    t_fixed = step_time(model, fixed, args.device) * fixed_batches
    full = [(w, torch.full((w.shape[0],), w.shape[1], dtype=torch.int64)) for w, _ in fixed]
    t_full = step_time(model, full, args.device) * fixed_batches  # all-full lengths: the unmasked path
    t_bucket = step_time(model, bucketed, args.device) * len(sampler)
    return dict(corpus=corpus, fixed_pad=fixed_pad, bucket_pad=bucket_pad, buckets=buckets,
                t_fixed=t_fixed, t_full=t_full, t_bucket=t_bucket, batches=(fixed_batches, len(sampler)))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=2000)
    p.add_argument("--timed-batches", type=int, default=6)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--buckets", type=int, default=10)
    p.add_argument("--scale", type=float, default=0.1)
    p.add_argument("--d-model", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default="reference")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# bench_varlen ({datetime.date.today()}, {platform.processor() or platform.machine()}, "
          f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()})\n")
    print(f"{args.clips} clips, batch {args.batch}, {args.buckets} buckets, durations x{args.scale}, "
          f"Pure Mamba raw d_model={args.d_model}, scan backend {args.backend}\n")
    print("| corpus | padding fixed | padding bucket | epoch fixed (s) | fixed, all-full lengths given (s) "
          "| epoch bucket (s) | speed-up | buckets (samples) |")
    print("|---|---|---|---|---|---|---|---|")
    for corpus in ("urbansound8k", "librispeech"):
        r = run(corpus, args)
        print(f"| {corpus} | {r['fixed_pad']:.1%} | {r['bucket_pad']:.1%} | {r['t_fixed']:.1f} | {r['t_full']:.1f} | "
              f"{r['t_bucket']:.1f} | {r['t_fixed'] / r['t_bucket']:.2f}x | {r['buckets']} |", flush=True)


if __name__ == "__main__":
    main()
