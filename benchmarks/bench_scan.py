"""Selective-scan microbenchmark: forward + backward of the Triton kernels (asserts nothing).

    PYTHONPATH=src python3 benchmarks/bench_scan.py --sizes 32x3000 8x30000 1x300000 --sweep

Shapes follow ANCHORS.md: D=512, N=32, z-gating, softplus delta with bias, bf16 activations, fp32
A/D/bias. Time: median of ``triton.testing.do_bench`` (CUDA events). Also reports the two ceilings'
fractions: exponentials per second (5 per (b, d, t, n): 2 forward, 3 backward, the count the rate was
first measured with; since session 21 the default backward computes 2, not 3) against the measured
3.83e12/s, and the minimal bytes (each input read once, each output written once) per second
against the measured 3.0 TB/s copy rate.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import triton

from helix.ops.selective_scan import triton as scan_kernels
from helix.ops.selective_scan.triton import ScanConfig, selective_scan_triton

# kernel name -> the last compiled kernel launched (registers, spills, shared memory)
LAST_COMPILED: dict = {}
_launch = scan_kernels._launch


def _recording_launch(kernel, grid, *args, **kwargs):
    LAST_COMPILED[kernel.fn.__name__] = compiled = _launch(kernel, grid, *args, **kwargs)
    return compiled


scan_kernels._launch = _recording_launch  # benchmark only: the library launches without bookkeeping

EXP_RATE = 3.83e12  # tl.exp throughput measured on the H100 (ANCHORS.md)
COPY_RATE = 3.0e12  # device-to-device copy, bytes read + written
BIDIR = False  # --bidir: D channels = two directions of D/2, B/C (B, 2, N, L), as the BiMamba block runs

CONFIGS = {
    "t32-dg64-w2": ScanConfig(32, 64, 2),
    "t32-dg16-w2": ScanConfig(32, 16, 2),
    "t32-dg64-w1": ScanConfig(32, 64, 1),
    "t32-dg64-w4": ScanConfig(32, 64, 4),
    "t64-dg64-w4": ScanConfig(64, 64, 4),
    "t64-dg64-w2": ScanConfig(64, 64, 2),
    "t16-dg64-w1": ScanConfig(16, 64, 1),
    "t32-dg32-w1": ScanConfig(32, 32, 1),
    "t64-dg64-w1": ScanConfig(64, 64, 1),
    "t32-dg128-w1": ScanConfig(32, 128, 1),
    "t64-dg32-w2": ScanConfig(64, 32, 2),
    # the forward-side kernels with several steps and states per thread (columns are the default)
    "t32-dg128-w1-rows": ScanConfig(32, 128, 1, layout="rows"),
    "t128-dg64-w4": ScanConfig(128, 64, 4),
    # the forward walking its chunks in sequence (no chunk-state or carry pass), at three launch sizes
    "t32-dg128-w1-serial": ScanConfig(32, 128, 1, fwd_chunks="serial"),
    "t32-dg128-w1-serial-f1024": ScanConfig(32, 128, 1, fwd_chunks="serial", serial_fill=1024),
    "t32-dg128-w1-serial-f4096": ScanConfig(32, 128, 1, fwd_chunks="serial", serial_fill=4096),
    # the scans loading each channel's inputs when they use them (before session 15's default: one ahead)
    "t32-dg128-w1-noprefetch": ScanConfig(32, 128, 1, prefetch=False),
    # the Gluon backward's dB, dC accumulators in shared memory: slower than registers before the loads
    # went one channel ahead (RESULTS.md section 14); with them, offline (Triton 3.6, sm_90) its channel
    # loop has no spills and 1,061 instructions against 27/34 spill stores/loads and 1,088 (section 19)
    "t32-dg128-w1-accsmem": ScanConfig(32, 128, 1, bwd_smem="acc", bwd_next="exp"),
    # the Gluon backward's dA atomic masked at every size (full_n unmasks it where N = 32 and L % 16 == 0)
    "t32-dg128-w1-masked": ScanConfig(32, 128, 1, full_n=False),
    # a_{t+1} as a_t's tile one step on (one exponential per element in the backward, not two), with the
    # accumulators (and B, C) in registers or shared memory, and register caps that fit 10 or 12 warps per SM.
    # Offline (Triton 3.6, sm_90, channel loop): 1,002 instructions, 59/65 spill stores/loads (registers);
    # 903, none (acc); 936, none, 232 registers (acc+bc); 963, 4/10 at 200; 1,019, 27/34 at 168. The
    # session-20 default (exp, registers): 1,090, 28/35. Shift with acc is the default since session 21.
    "t32-dg128-w1-exp": ScanConfig(32, 128, 1, bwd_next="exp", bwd_smem="none"),
    "t32-dg128-w1-shift": ScanConfig(32, 128, 1, bwd_next="shift", bwd_smem="none"),
    "t32-dg128-w1-shift-acc": ScanConfig(32, 128, 1, bwd_next="shift", bwd_smem="acc"),
    "t32-dg128-w1-shift-accbc": ScanConfig(32, 128, 1, bwd_next="shift", bwd_smem="acc+bc"),
    "t32-dg128-w1-shift-accbc-r200": ScanConfig(32, 128, 1, bwd_next="shift", bwd_smem="acc+bc", bwd_maxnreg=200),
    "t32-dg128-w1-shift-accbc-r168": ScanConfig(32, 128, 1, bwd_next="shift", bwd_smem="acc+bc", bwd_maxnreg=168),
    "t32-dg128-w1-shift-acc-r232": ScanConfig(32, 128, 1, bwd_next="shift", bwd_smem="acc", bwd_maxnreg=232),
    # 9 warps per SM: offline 923 instructions, 4/10 spills
    "t32-dg128-w1-shift-acc-r224": ScanConfig(32, 128, 1, bwd_next="shift", bwd_smem="acc", bwd_maxnreg=224),
}


def make(Bsz, D, L, N, dtype=torch.bfloat16, device="cuda", layout="first", groups=1):
    """layout "first": (B, D, L) contiguous; "last": (B, L, D) storage seen through transposed views,
    as the Mamba mixer passes them (delta, z, B, C straight from the projections)."""
    torch.manual_seed(0)
    kw = dict(device=device, dtype=dtype)

    def act(*shape):
        if layout == "first":
            return torch.randn(*shape, **kw)
        return torch.randn(shape[0], shape[2], shape[1], **kw).transpose(1, 2)

    return dict(u=act(Bsz, D, L), delta=act(Bsz, D, L) * 0.5 - 1.0,
                A=-torch.arange(1, N + 1, device=device, dtype=torch.float32).repeat(D, 1),
                B=act(Bsz, groups * N, L).unflatten(1, (groups, N)),
                C=act(Bsz, groups * N, L).unflatten(1, (groups, N)), D=torch.ones(D, device=device), z=act(Bsz, D, L),
                delta_bias=torch.randn(D, device=device) * 0.3)


def minimal_bytes(Bsz, D, L, N, elt=2):
    bdl, bnl = Bsz * D * L, Bsz * N * L
    fwd = bdl * elt * 4 + bnl * elt * 2  # u, delta, z in, out; B, C in
    bwd = bdl * elt * 7 + bnl * (elt * 2 + 4 * 2)  # u, delta, z, dout in; du, ddelta, dz; B, C in, dB, dC fp32
    return fwd, bwd


def bench_one(Bsz, D, L, N, cfg, dtype=torch.bfloat16, layout="first"):
    x = make(Bsz, D, L, N, dtype, layout=layout, groups=2 if BIDIR else 1)
    leaves = {k: v.detach().requires_grad_() for k, v in x.items()}
    x = {k: v.detach() for k, v in x.items()}
    g = torch.randn(Bsz, D, L, device="cuda", dtype=dtype)

    def fwd():
        with torch.no_grad():
            return selective_scan_triton(**x, delta_softplus=True, config=cfg, bidirectional=BIDIR)

    def fwd_bwd():
        y = selective_scan_triton(**leaves, delta_softplus=True, config=cfg, bidirectional=BIDIR)
        y.backward(g)

    for v in leaves.values():
        v.grad = None
    t_fwd = triton.testing.do_bench(fwd, warmup=25, rep=100, return_mode="median")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    t_all = triton.testing.do_bench(fwd_bwd, warmup=25, rep=100, grad_to_none=list(leaves.values()),
                                    return_mode="median")
    peak = torch.cuda.max_memory_allocated() - base
    elems = Bsz * D * L * N
    b_fwd, b_bwd = minimal_bytes(Bsz, D, L, N * (2 if BIDIR else 1), torch.finfo(dtype).bits // 8)
    return dict(B=Bsz, D=D, L=L, N=N, dtype=str(dtype).replace("torch.", ""), config=repr(cfg), layout=layout,
                fwd_ms=t_fwd, fwd_bwd_ms=t_all, extra_peak_gb=peak / 1e9,
                exp_per_s=5 * elems / (t_all * 1e-3), exp_fraction=5 * elems / (t_all * 1e-3) / EXP_RATE,
                min_bytes_gb=(b_fwd + b_bwd) / 1e9, achieved_tb_s=(b_fwd + b_bwd) / (t_all * 1e-3) / 1e12,
                bw_fraction=(b_fwd + b_bwd) / (t_all * 1e-3) / COPY_RATE)


def kernel_report(Bsz, D, L, N, cfg, layout="first"):
    """Registers, spills and shared memory of each kernel, and its device time per call (profiler)."""
    from torch.profiler import ProfilerActivity, profile

    x = {k: v.detach().requires_grad_() for k, v in make(Bsz, D, L, N, layout=layout, groups=2 if BIDIR else 1).items()}
    g = torch.randn(Bsz, D, L, device="cuda", dtype=torch.bfloat16)

    def once():
        selective_scan_triton(**x, delta_softplus=True, config=cfg, bidirectional=BIDIR).backward(g)

    once()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            once()
        torch.cuda.synchronize()
    times = {}
    for ev in prof.key_averages():
        if ev.device_type.name == "CUDA" or getattr(ev, "device_time_total", 0):
            total = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
            times[ev.key] = total / 3 / 1e3  # ms per fwd+bwd
    launched = {name for name in LAST_COMPILED if any(name in key for key in times)}
    for name in list(LAST_COMPILED):
        if name not in launched:
            del LAST_COMPILED[name]
    print(f"kernels at B={Bsz} L={L} {cfg} ({layout}):")
    for name, k in LAST_COMPILED.items():
        regs = getattr(k, "n_regs", "?")
        spills = getattr(k, "n_spills", "?")
        shared = getattr(getattr(k, "metadata", None), "shared", "?")
        t = times[name] if name in times else sum(v for key, v in times.items() if name in key)
        print(f"  {name:18s} regs {regs:>4} spills {spills:>4} smem {shared:>6}  {t:7.2f} ms")
    other = sum(v for key, v in times.items() if not any(n in key for n in LAST_COMPILED))
    print(f"  {'other kernels':18s} {'':34s} {other:7.2f} ms")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["32x3000", "8x30000", "1x300000"], help="BxL")
    p.add_argument("--D", type=int, default=512)
    p.add_argument("--N", type=int, default=32)
    p.add_argument("--sweep", action="store_true", help="time every config at the first size")
    p.add_argument("--config", default="t32-dg128-w1", choices=sorted(CONFIGS))
    p.add_argument("--json", default=None, help="write all rows here")
    p.add_argument("--layout", default="first", choices=["first", "last"])
    p.add_argument("--profile", action="store_true", help="per-kernel registers, spills and time")
    p.add_argument("--configs", nargs="+", default=None, help="the sweep's configs (default: all)")
    p.add_argument("--bidir", action="store_true", help="one bidirectional launch (D = both directions)")
    args = p.parse_args(argv)
    global BIDIR
    BIDIR = args.bidir
    rows = []
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    best = args.config
    if args.sweep:
        results = {}
        for name, cfg in CONFIGS.items():
            if args.configs and name not in args.configs:
                continue
            t0 = time.time()
            try:
                r = bench_one(sizes[0][0], args.D, sizes[0][1], args.N, cfg, layout=args.layout)
            except Exception as err:  # a config that fails to compile or launch is reported, not fatal
                print(f"{name}: failed: {type(err).__name__}: {str(err)[:200]}", flush=True)
                continue
            r["name"] = name
            results[name] = r
            rows.append(r)
            print(f"{name}: fwd {r['fwd_ms']:.2f} ms, fwd+bwd {r['fwd_bwd_ms']:.2f} ms "
                  f"({time.time() - t0:.0f} s with compile)", flush=True)
        best = min(results, key=lambda k: results[k]["fwd_bwd_ms"])
        print(f"best config: {best}", flush=True)
    for Bsz, L in sizes[1:] if args.sweep else sizes:
        r = bench_one(Bsz, args.D, L, args.N, CONFIGS[best], layout=args.layout)
        r["name"] = best
        rows.append(r)
        torch.cuda.empty_cache()
    if args.profile:
        kernel_report(sizes[0][0], args.D, sizes[0][1], args.N, CONFIGS[best], args.layout)
        if args.layout == "first":
            r = bench_one(sizes[0][0], args.D, sizes[0][1], args.N, CONFIGS[best], layout="last")
            r["name"] = best + "-last"
            rows.append(r)
    print(f"\n{'config':22s} {'B':>3s} {'L':>7s} {'fwd ms':>8s} {'f+b ms':>8s} {'peak GB':>8s} "
          f"{'exp/s':>9s} {'exp %':>6s} {'TB/s':>6s} {'bw %':>5s}")
    for r in rows:
        print(f"{r['name']:22s} {r['B']:3d} {r['L']:7d} {r['fwd_ms']:8.2f} {r['fwd_bwd_ms']:8.2f} "
              f"{r['extra_peak_gb']:8.2f} {r['exp_per_s']:9.2e} {100 * r['exp_fraction']:6.1f} "
              f"{r['achieved_tb_s']:6.2f} {100 * r['bw_fraction']:5.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
