"""CPU timings for issue 2: forward+backward of the six paper variants and of the reference scan.

    .venv/bin/python benchmarks/bench_cpu_models.py [--batch 8] [--seconds 5] [--repeats 3] [--threads N] [--scan-only]
        [--variants pure_mamba_raw helix_raw]

Prints a Markdown table (median of --repeats after one warm-up). Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from helix.models import create_model
from helix.ops.selective_scan import selective_scan_reference

VARIANTS = ["pure_mamba_raw", "pure_mamba_mel", "helix_raw", "helix_mel", "pure_attention_raw", "pure_attention_mel"]


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=50)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--scan-only", action="store_true", help="time only the reference scan")
    p.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS, help="models to time")
    p.add_argument("--no-scan", action="store_true", help="skip the reference-scan timing")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    if not args.scan_only:
        time_models(args)
    if not args.no_scan:
        time_scan(args.repeats)


def time_models(args) -> None:
    wave = torch.randn(args.batch, int(args.seconds * 16000)) * 0.1
    labels = torch.randint(0, args.num_classes, (args.batch,))
    print(f"\n| model | tokens | fwd+bwd (s), B={args.batch}, {args.seconds:g} s clips |\n| --- | ---: | ---: |")
    for name in args.variants:
        model = create_model(name, args.num_classes)

        def step():
            model.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(wave), labels).backward()

        print(f"| {name} | {model.num_tokens(wave.shape[1])} | {median_time(step, args.repeats):.2f} |", flush=True)


def time_scan(repeats: int) -> None:
    B, D, N, L = 8, 512, 32, 500
    g = torch.Generator().manual_seed(0)
    u, delta, z = (torch.randn(B, D, L, generator=g).requires_grad_() for _ in range(3))
    A = (-torch.rand(D, N, generator=g) - 0.5).requires_grad_()
    Bm, Cm = (torch.randn(B, N, L, generator=g).requires_grad_() for _ in range(2))
    Dp, bias = torch.randn(D).requires_grad_(), torch.randn(D).requires_grad_()

    def scan():
        selective_scan_reference(u, delta, A, Bm, Cm, Dp, z, bias, delta_softplus=True).sum().backward()

    print(f"\nreference selective scan fwd+bwd, B={B} L={L} D={D} N={N}: {median_time(scan, repeats):.3f} s")


if __name__ == "__main__":
    main()
