"""Per-step reading of a Chrome trace written by ``bench_short_steps.py --trace`` (RESULTS.md
section 11): the span from first to last kernel, kernel time by kind, the small gaps between
kernels, and the host's waits (``cudaStreamSynchronize`` / ``cudaDeviceSynchronize``) and graph
launches. Plain or gzipped JSON; no GPU needed.

    python benchmarks/read_trace.py benchmarks/gpu/trace_pure_mamba_mel_5s_graphs_on_session8.json.gz --steps 4
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json

KINDS = (("Triton scan / conv kernels", lambda n: n.startswith("_")),
         ("GEMMs", lambda n: any(k in n for k in ("nvjet", "gemm", "cutlass"))),
         ("copies, cat, fills", lambda n: any(k in n for k in ("copy", "Cat", "Fill", "Memcpy", "Memset"))),
         ("fused AdamW + clipping (multi_tensor_apply)", lambda n: "multi_tensor" in n),
         ("other elementwise, reductions, norms", lambda n: True))


def read(path: str, steps: int) -> str:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        events = json.load(f)["traceEvents"]
    kernels = sorted((e for e in events if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")),
                     key=lambda e: e["ts"])
    time, count = collections.Counter(), collections.Counter()
    for e in kernels:
        kind = next(name for name, match in KINDS if match(e["name"]))
        time[kind] += e["dur"]
        count[kind] += 1
    span = kernels[-1]["ts"] + kernels[-1]["dur"] - kernels[0]["ts"]
    gaps = [b["ts"] - (a["ts"] + a["dur"]) for a, b in zip(kernels, kernels[1:])]
    host = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "cuda_runtime" and e["name"] in ("cudaStreamSynchronize", "cudaDeviceSynchronize",
                                                            "cudaGraphLaunch"):
            host[e["name"]].append(e["dur"] / 1000)
    lines = [f"{path}: per step, over {steps} steps", "",
             "| per step | |", "|---|---:|",
             f"| first kernel to last kernel | {span / steps / 1000:.2f} ms |",
             f"| kernels (sum of durations) | {sum(time.values()) / steps / 1000:.2f} ms, "
             f"{len(kernels) / steps:.0f} kernels |"]
    lines += [f"| {kind} | {time[kind] / steps / 1000:.2f} ms, {count[kind] / steps:.0f} kernels |"
              for kind, _ in KINDS]
    lines.append(f"| gaps between kernels of 50 us or less | {sum(g for g in gaps if 0 < g <= 50) / steps / 1000:.2f} ms |")
    lines.append(f"\nlargest gaps between kernels (us): {sorted(round(g) for g in gaps)[-10:]}")
    for name, durations in sorted(host.items()):
        lines.append(f"host {name}: {len(durations)} calls, ms each: {[round(d, 2) for d in durations]}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("traces", nargs="+")
    p.add_argument("--steps", type=int, default=4, help="profiled steps in the trace (bench_short_steps: 4)")
    args = p.parse_args()
    for path in args.traces:
        print(read(path, args.steps) + "\n")


if __name__ == "__main__":
    main()
