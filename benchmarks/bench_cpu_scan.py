"""CPU timings for issue 16: the numba scan and conv against the reference, measured in the same run.

    .venv/bin/python benchmarks/bench_cpu_scan.py [--repeats 5] [--threads N] [--models] [--jit]
        [--steps-only | --conv-only]

- scan fwd+bwd at B=8, L=500, D=512, N=32 (D skip, SiLU(z) gate, delta bias + softplus), one direction
  and both directions in one call (D = 2 x 256), numba kernel vs :func:`selective_scan_reference`;
  no-grad forward of the same; causal conv + SiLU fwd+bwd at B=8, C=1024, L=500; the conv as the
  Pure Mamba mixer calls it (C=512, K=4, token-major x, B=32 L=100 / B=32 L=250 / B=8 L=500), fwd+bwd
  and no-grad (``--conv-only``: just these).
- ``--models``: a Pure Mamba mel and raw training step (forward, cross-entropy, backward), B=32,
  1 s clips, ``scan_backend="auto"`` (the numba kernel on CPU) vs ``"reference"``.
- ``--jit``: first-call cost in fresh processes, once with an empty numba cache (compile) and once
  with the cache that run left behind (load from disk).

Every figure is the best of ``--repeats`` after one warm-up (best-of, because the 2-core machine is
shared with other jobs: the median measures the neighbours). Prints Markdown. Asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time

import torch

from helix.ops.causal_conv import causal_conv1d_silu
from helix.ops.selective_scan import selective_scan, selective_scan_bidirectional


def best_time(fn, repeats: int) -> tuple[float, float]:
    """Best wall time and best process CPU time (all threads) of ``repeats`` calls after a warm-up.

    CPU time is the steadier figure on a shared machine: it does not count time spent waiting for
    a core, only the (cache-polluted) work itself."""
    fn()  # warm-up (and JIT compile or cache load on the first call)
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)


def scan_inputs(B, D, L, N, bidirectional, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape_bc = (B, 2, N, L) if bidirectional else (B, N, L)
    return dict(u=torch.randn(B, D, L, generator=g), delta=torch.randn(B, D, L, generator=g) * 0.5 - 1.0,
                A=-torch.rand(D, N, generator=g) * N - 0.5, B=torch.randn(*shape_bc, generator=g),
                C=torch.randn(*shape_bc, generator=g), D=torch.randn(D, generator=g),
                z=torch.randn(B, D, L, generator=g), delta_bias=torch.randn(D, generator=g) * 0.3)


def row(name, t_kernel, t_ref, scale=1e3):
    """Markdown row: wall and CPU time of the kernel and the reference, and the speed-ups."""
    (wk, ck), (wr, cr) = t_kernel, t_ref
    print(f"| {name} | {wk * scale:.3g} / {ck * scale:.3g} | {wr * scale:.3g} / {cr * scale:.3g} | "
          f"{wr / wk:.1f}x / {cr / ck:.1f}x |", flush=True)


def time_ops(repeats: int) -> None:
    B, L, N = 8, 500, 32
    print("\n| op (B=8, L=500, N=32) | numba (ms), wall / CPU | reference (ms), wall / CPU | speed-up, wall / CPU |"
          "\n| --- | ---: | ---: | ---: |")
    for name, bidir, D in (("scan fwd+bwd, D=512", False, 512), ("scan fwd+bwd, both directions, D=2x256", True, 512)):
        ins = scan_inputs(B, D, L, N, bidir)
        params = {k: v.requires_grad_() for k, v in ins.items()}
        fn = selective_scan_bidirectional if bidir else selective_scan

        def step(backend):
            fn(**params, delta_softplus=True, backend=backend).sum().backward()

        row(name, best_time(lambda: step("cpu"), repeats), best_time(lambda: step("reference"), repeats))
    ins = scan_inputs(B, 512, L, N, False)

    def infer(backend):
        with torch.no_grad():
            selective_scan(**ins, delta_softplus=True, backend=backend)

    row("scan forward, no grad, D=512", best_time(lambda: infer("cpu"), repeats),
        best_time(lambda: infer("reference"), repeats))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, 1024, L, generator=g).requires_grad_()
    w, b = (torch.randn(1024, 4, generator=g) * 0.5).requires_grad_(), torch.randn(1024, generator=g).requires_grad_()

    def conv(backend):
        causal_conv1d_silu(x, w, b, bidirectional=True, backend=backend).sum().backward()

    row("causal conv + SiLU fwd+bwd, C=1024, both directions", best_time(lambda: conv("cpu"), repeats),
        best_time(lambda: conv("reference"), repeats))


def time_conv_mixer(repeats: int) -> None:
    """The conv at the Pure Mamba mixer's shapes and layout: C = d_inner = 512, K = 4, one direction,
    x the first half of a (B, L, 2C) in_proj output seen as (B, C, L), dout token-major."""
    print("\n| conv + SiLU as the mixer calls it, C=512, K=4 | numba (ms), wall / CPU | reference (ms), wall / CPU | "
          "speed-up, wall / CPU |\n| --- | ---: | ---: | ---: |")
    for Bsz, L in ((32, 100), (32, 250), (8, 500)):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(Bsz, L, 1024, generator=g)[..., :512].transpose(1, 2).requires_grad_()
        w = (torch.randn(512, 4, generator=g) * 0.5).requires_grad_()
        b = torch.randn(512, generator=g).requires_grad_()
        dout = torch.randn(Bsz, L, 512, generator=g).transpose(1, 2)

        def train(backend):
            torch.autograd.grad(causal_conv1d_silu(x, w, b, backend=backend), (x, w, b), dout)

        def infer(backend):
            with torch.no_grad():
                causal_conv1d_silu(x, w, b, backend=backend)

        for label, fn in (("fwd+bwd", train), ("forward, no grad", infer)):
            row(f"{label}, B={Bsz}, L={L}", best_time(lambda: fn("cpu"), repeats),
                best_time(lambda: fn("reference"), repeats))


def time_models(repeats: int, with_reference: bool = True) -> None:
    from helix.models import create_model

    wave = torch.randn(32, 16000) * 0.1
    labels = torch.randint(0, 50, (32,))
    if with_reference:
        print("\n| training step, B=32, 1 s clips | numba (s), wall / CPU | reference (s), wall / CPU | "
              "speed-up, wall / CPU |\n| --- | ---: | ---: | ---: |")
    else:
        print("\n| training step, B=32, 1 s clips | numba (s), wall / CPU |\n| --- | ---: |")
    for name in ("pure_mamba_mel", "pure_mamba_raw"):
        times = []
        for backend in ("auto", "reference") if with_reference else ("auto",):
            torch.manual_seed(0)
            model = create_model(name, 50, scan_backend=backend)

            def step():
                model.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(model(wave), labels).backward()

            times.append(best_time(step, repeats))
        if with_reference:
            row(name, *times, scale=1)
        else:
            print(f"| {name} | {times[0][0]:.2f} / {times[0][1]:.2f} |")


_FIRST_CALL = """
import time
t0 = time.perf_counter()
import torch
from helix.ops.selective_scan.cpu import selective_scan_cpu
from helix.ops.causal_conv.cpu import causal_conv1d_silu_cpu
t1 = time.perf_counter()
u = torch.randn(1, 2, 5, requires_grad=True)
B = torch.randn(1, 2, 4, 5)
selective_scan_cpu(u, u, -torch.rand(2, 4), B, B, torch.ones(2), u, torch.zeros(2), True, True).sum().backward()
with torch.no_grad():
    selective_scan_cpu(u, u, -torch.rand(2, 4), B[:, 0], B[:, 0], delta_softplus=True)
causal_conv1d_silu_cpu(u, torch.randn(2, 4), torch.randn(2), True).sum().backward()
print(f"{t1 - t0:.2f} {time.perf_counter() - t1:.2f}")
"""


def time_jit() -> None:
    print("\n| first call in a fresh process | import (s) | first scan fwd+bwd, no-grad fwd, conv fwd+bwd (s) |"
          "\n| --- | ---: | ---: |")
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for label in ("empty numba cache (compiles)", "cache from the previous run (loads)"):
            out = subprocess.run([sys.executable, "-c", _FIRST_CALL], env=env, capture_output=True, text=True,
                                 check=True).stdout.split()
            print(f"| {label} | {out[0]} | {out[1]} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default); numba follows")
    p.add_argument("--models", action="store_true", help="also time Pure Mamba mel/raw training steps")
    p.add_argument("--jit", action="store_true", help="also time the first call in fresh processes")
    p.add_argument("--steps-only", action="store_true",
                   help="only the training steps, numba only (the reference raw step takes ~25 s)")
    p.add_argument("--conv-only", action="store_true", help="only the conv at the mixer's shapes")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import numba

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}, "
          f"numba {numba.__version__}, threads {torch.get_num_threads()}; "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
          f"load average {os.getloadavg()[0]:.1f}")
    if args.steps_only:
        time_models(args.repeats, with_reference=False)
    elif args.conv_only:
        time_conv_mixer(args.repeats)
    else:
        time_ops(args.repeats)
        time_conv_mixer(args.repeats)
    if args.models and not (args.steps_only or args.conv_only):
        time_models(args.repeats)
    if args.jit:
        time_jit()
    print(f"\nload average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
