"""One device call: GPU kernel tests, the scan microbenchmark and the model benchmark (asserts nothing).

    OUT=/tmp/out PYTHONPATH=src python3 benchmarks/gpu_suite.py --stages env tests scan models

Each stage writes its log under $OUT and prints a short summary; a failing stage does not stop the
next one. The last lines printed are the summary table.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time

OUT = os.environ.get("OUT", "/tmp/helix-gpu-suite")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


LOG = "suite_full.log"  # every stage appends here: few files come back from the device


def sh(cmd: list[str], stage: str, timeout: int) -> tuple[int, float, str]:
    """Run ``cmd`` with the repo's src on PYTHONPATH, appending to $OUT/suite_full.log; rc, seconds, tail."""
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"), PYTHONUNBUFFERED="1")
    tmp = os.path.join(OUT, f".{stage}.tmp")
    t0 = time.time()
    with open(tmp, "w") as f:
        try:
            rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    with open(tmp) as f:
        text = f.read()
    os.remove(tmp)
    with open(os.path.join(OUT, LOG), "a") as f:
        f.write(f"\n===== {stage}: {' '.join(cmd)} (rc={rc})\n{text}")
    return rc, time.time() - t0, text[-3000:]


PROFILE = """
import torch, torch.nn.functional as F
from torch.profiler import profile, ProfilerActivity
from helix.models import create_model
m = create_model("pure_mamba_raw", 1313).cuda()
opt = torch.optim.AdamW(m.parameters())
wave = torch.randn(8, 30000 * 160, device="cuda"); lab = torch.randint(0, 1313, (8,), device="cuda")
def step():
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = F.cross_entropy(m(wave), lab)
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
step(); torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    step(); torch.cuda.synchronize()
print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60))
import os
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof2:
    step(); torch.cuda.synchronize()
with open(os.path.join(os.environ["OUT"], "profile_shapes.txt"), "w") as f:
    f.write(prof2.key_averages(group_by_input_shape=True).table(
        sort_by="self_cuda_time_total", row_limit=60, max_name_column_width=50, max_shapes_column_width=120))
from helix.ops.selective_scan import triton as t
compiled = {}
_launch = t._launch
t._launch = lambda kernel, grid, *a, **kw: compiled.setdefault(kernel.fn.__name__, _launch(kernel, grid, *a, **kw))
step(); torch.cuda.synchronize()
k = compiled.get("_bwd_scan")
if k is not None:
    import os
    open(os.path.join(os.environ["OUT"], "bwd_scan.ttgir"), "w").write(k.asm["ttgir"])
"""


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--stages", nargs="+", default=["env", "tests", "scan"],
                   choices=["env", "tests", "scan", "models", "layers", "profile"])
    p.add_argument("--test-timeout", type=int, default=240)
    p.add_argument("--scan-args", default="--sweep --sizes 32x3000 8x30000 1x300000")
    p.add_argument("--bench-args", action="append", default=None,
                   help="one helix bench invocation each (repeatable); --out is set to $OUT/run<i>")
    p.add_argument("--pytest-k", default="")
    p.add_argument("--bench-timeout", type=int, nargs="+", default=[540], help="seconds per bench invocation")
    p.add_argument("--pytest-x", action="store_true", help="stop the tests at the first failure")
    args = p.parse_args()
    os.makedirs(OUT, exist_ok=True)
    summary = []
    py = sys.executable
    if "env" in args.stages:
        rc, dt, tail = sh([py, "-c", "import torch, triton; print(torch.__version__, triton.__version__, "
                                     "torch.cuda.get_device_name(), torch.version.cuda)"], "env", 120)
        summary.append(f"env: {tail.strip()}")
    if "tests" in args.stages:
        cmd = [py, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", "tests/ops"]
        if args.pytest_k:
            cmd += ["-k", args.pytest_k]
        cmd += ["-x"] if args.pytest_x else []
        rc, dt, tail = sh(cmd, "tests", args.test_timeout)
        print(tail[-2500:], flush=True)
        summary.append(f"scan tests: rc={rc} in {dt:.0f} s: {tail.strip().splitlines()[-1] if tail.strip() else ''}")
    if "layers" in args.stages:
        rc, dt, tail = sh([py, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", "tests/layers", "tests/models"],
                          "layers", args.test_timeout)
        print(tail[-1500:], flush=True)
        summary.append(f"layer/model tests: rc={rc} in {dt:.0f} s: {tail.strip().splitlines()[-1]}")
    if "scan" in args.stages:
        rc, dt, tail = sh([py, "benchmarks/bench_scan.py", *shlex.split(args.scan_args), "--json",
                           os.path.join(OUT, "bench_scan.json")], "scan", 330)
        summary.append(f"scan bench: rc={rc} in {dt:.0f} s\n{tail[-1800:]}")
    if "models" in args.stages:
        for i, bench_args in enumerate(args.bench_args or ["--device cuda"]):
            rc, dt, tail = sh([py, "-m", "helix.commands.bench", *shlex.split(bench_args), "--out",
                               os.path.join(OUT, f"run{i}")], f"models{i}",
                               args.bench_timeout[min(i, len(args.bench_timeout) - 1)])
            summary.append(f"model bench {i}: rc={rc} in {dt:.0f} s\n{tail[-2500:]}")
    if "profile" in args.stages:
        rc, dt, tail = sh([py, "-c", PROFILE], "profile", 240)
        summary.append(f"step profile: rc={rc} in {dt:.0f} s\n{tail[-3000:]}")
    print("\n==== summary ====")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
