"""A/B of the conv forward compiled with L and the strides specialised (the library's, 8-element vectors
for the aligned tap, scalar loads spread over several cache lines for the shifted ones) or unspecialised
(one element per thread on every access, so each warp reads 32 consecutive steps per tap, as the
backward's kernels do). Asserts nothing.

    PYTHONPATH=src python3 benchmarks/ab_conv_fwd_spec.py --sizes 8x30000 32x3000 1x300000 --step
"""

import argparse

import torch
import triton

from ab_common import conv_inputs
from helix.ops.causal_conv import triton as conv

# the K-tap kernel (session 19's forward; since session 21 ``_conv_fwd_taps``, run with FWD_GROUPS off)
conv.FWD_GROUPS = False
SPEC = conv._conv_fwd_taps
UNSPEC = triton.jit(SPEC.fn, do_not_specialize=["C", "L", "HALF", "BIDIR", "sx_b", "sx_c"])

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--sizes", nargs="+", default=["8x30000"])
p.add_argument("--channels", type=int, default=1024)
p.add_argument("--step", action="store_true", help="also time the 300 s training step (B=8) with each")
args = p.parse_args()
for size in args.sizes:
    Bsz, L = (int(v) for v in size.split("x"))
    x, w, b = conv_inputs(Bsz, args.channels, L)
    outs, times = [], []
    for kernel in (SPEC, UNSPEC):
        conv._conv_fwd_taps = kernel
        outs.append(conv.conv_forward(x, w, b, True))
        times.append(triton.testing.do_bench(lambda: conv.conv_forward(x, w, b, True), warmup=10, rep=100,
                                             return_mode="median"))
    conv._conv_fwd_taps = SPEC
    gb = 2 * x.numel() * 2 / 1e9
    print(f"conv fwd B={Bsz} L={L} C={args.channels}: specialised {times[0]:.3f} ms ({gb / times[0]:.2f} TB/s), "
          f"unspecialised {times[1]:.3f} ms ({gb / times[1]:.2f} TB/s), equal {torch.equal(outs[0], outs[1])}",
          flush=True)
if args.step:
    from helix.reporting import table1

    setup = table1.BenchSetup("cuda", num_classes=1313, steps=5, warmup=1)
    for variant, name in (("HELIX (SDPA)", "helix_raw"), ("Pure Mamba", "pure_mamba_raw")):
        for label, kernel in (("specialised", SPEC), ("unspecialised", UNSPEC), ("specialised", SPEC)):
            conv._conv_fwd_taps = kernel
            r = table1.measure_step(variant, name, {"attention_impl": "sdpa"} if "HELIX" in variant else {},
                                    tokens=30000, batch=8, setup=setup)
            print(f"{variant:13s} B=8 conv fwd {label:13s} {r.step_ms:8.1f} ms {r.peak_gb:.3f} GB {r.status}",
                  flush=True)
    conv._conv_fwd_taps = SPEC
