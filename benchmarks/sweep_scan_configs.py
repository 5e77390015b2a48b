"""Per-kernel device time of the bidirectional scan (forward + backward) for a grid of launch shapes.

    PYTHONPATH=src python3 benchmarks/sweep_scan_configs.py --sizes 32x100 32x500 8x30000 \
        --dgs 8 16 32 64 128 --warps 1 2 --json sweep.json

Both directions in one launch, as the BiMamba block runs it (D = 2 x 512, B/C (B, 2, N, L)). Every
kernel of a forward+backward is timed by the profiler, so the forward-side kernels and ``_bwd_scan``
can each take their best shape (they are independent launches; only ``block_t`` is shared, because it
sets the chunk states). Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scan import LAST_COMPILED, make  # noqa: E402  (also installs its recording launch)

from helix.ops.selective_scan.triton import ScanConfig, selective_scan_triton  # noqa: E402

KERNELS = ("_fwd_chunk_state", "_fwd_scan", "_bwd_chunk_state", "_bwd_scan", "_chunk_carry")


def kernel_times(Bsz, D, L, N, cfg, reps):
    """ms per forward+backward for each scan kernel (and everything else), plus _bwd_scan's registers."""
    x = {k: v.detach().requires_grad_() for k, v in make(Bsz, D, L, N, groups=2).items()}
    g = torch.randn(Bsz, D, L, device="cuda", dtype=torch.bfloat16)

    def once():
        for v in x.values():
            v.grad = None
        selective_scan_triton(**x, delta_softplus=True, config=cfg, bidirectional=True).backward(g)

    for _ in range(3):
        once()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            once()
        torch.cuda.synchronize()
    out = dict.fromkeys(KERNELS, 0.0)
    out["other"] = 0.0
    for ev in prof.key_averages():
        t = getattr(ev, "device_time_total", 0) or getattr(ev, "cuda_time_total", 0)
        if not t:
            continue
        name = next((k for k in KERNELS if k in ev.key), "other")
        out[name] += t / reps / 1e3
    k = LAST_COMPILED.get("_bwd_scan")
    out["bwd_regs"] = getattr(k, "n_regs", None)
    out["bwd_spills"] = getattr(k, "n_spills", None)
    out["total"] = sum(out[k] for k in (*KERNELS, "other"))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["32x100", "32x500", "8x30000"], help="BxL")
    p.add_argument("--D", type=int, default=1024, help="channels of both directions together")
    p.add_argument("--N", type=int, default=32)
    p.add_argument("--block-t", type=int, nargs="+", default=[32])
    p.add_argument("--dgs", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    p.add_argument("--warps", type=int, nargs="+", default=[1, 2])
    p.add_argument("--bwd-maxnreg", type=int, nargs="+", default=[0], help="register caps for _bwd_scan (0: none)")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    rows = []
    for size in args.sizes:
        Bsz, L = (int(v) for v in size.split("x"))
        for bt in args.block_t:
            for dg, w, cap in ((dg, w, cap) for dg in args.dgs for w in args.warps for cap in args.bwd_maxnreg):
                cfg = ScanConfig(block_t=bt, dg=dg, num_warps=w, bwd_maxnreg=cap or None)
                try:
                    r = kernel_times(Bsz, args.D, L, args.N, cfg, args.reps)
                except Exception as err:  # a shape that fails to compile is reported, not fatal
                    print(f"{size} t{bt} dg{dg} w{w}: failed {type(err).__name__}: {str(err)[:160]}", flush=True)
                    continue
                r.update(B=Bsz, L=L, block_t=bt, dg=dg, warps=w, bwd_maxnreg=cap)
                rows.append(r)
                print(f"{size:>8s} t{bt:<3d} dg{dg:<4d} w{w} cap{cap:<3d} " + "  ".join(
                    f"{k.strip('_')} {r[k]:6.3f}" for k in (*KERNELS, "other")) +
                    f"  total {r['total']:7.3f} ms  bwd regs {r['bwd_regs']} spills {r['bwd_spills']}",
                    flush=True)
                torch.cuda.empty_cache()
        # the best shape per kernel family at this size (forward side: both chunk-state kernels and
        # _fwd_scan share a launch shape; _bwd_scan has its own)
        mine = [r for r in rows if (r["B"], r["L"]) == (Bsz, L)]
        for bt in args.block_t:
            at = [r for r in mine if r["block_t"] == bt]
            if not at:
                continue
            fwd_side = min(at, key=lambda r: r["_fwd_chunk_state"] + r["_fwd_scan"] + r["_bwd_chunk_state"])
            bwd_side = min(at, key=lambda r: r["_bwd_scan"])
            best = (fwd_side["_fwd_chunk_state"] + fwd_side["_fwd_scan"] + fwd_side["_bwd_chunk_state"]
                    + bwd_side["_bwd_scan"] + fwd_side["_chunk_carry"] + fwd_side["other"])
            print(f"BEST {size} t{bt}: forward side dg{fwd_side['dg']} w{fwd_side['warps']}, "
                  f"_bwd_scan dg{bwd_side['dg']} w{bwd_side['warps']} cap {bwd_side['bwd_maxnreg']} -> {best:.3f} ms "
                  f"(all-default row t32 dg128 w1: "
                  f"{next((r['total'] for r in at if r['dg'] == 128 and r['warps'] == 1), float('nan')):.3f} ms)",
                  flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
