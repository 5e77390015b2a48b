"""A/B of the conv forward: ``_conv_fwd_taps`` (K tap loads per step; specialised on L, its shifted taps
are scalar loads over several cache lines per warp) against ``_conv_fwd`` (interior tiles load 8-step
groups and a 4-step halo as aligned vectors and build the taps in registers), both through
``conv_forward`` (``causal_conv.triton.FWD_GROUPS``). Bytes per call: x read once, out written once.
GPU only; asserts nothing.

    PYTHONPATH=src python3 benchmarks/ab_conv_fwd.py --sizes 8x30000 32x3000 1x300000 --step
"""

import argparse

import torch
import triton.testing

from ab_common import conv_inputs
from helix.ops.causal_conv import triton as conv

KERNELS = {"taps": False, "groups": True}  # label -> FWD_GROUPS

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--sizes", nargs="+", default=["8x30000", "32x3000", "1x300000"], help="BxL")
p.add_argument("--channels", type=int, default=1024)
p.add_argument("--step", action="store_true", help="also time the 300 s training step (B=8) with each")
args = p.parse_args()
print(f"{'B x L':>10s} {'C':>5s} | {'taps ms':>8s} {'TB/s':>5s} | {'groups ms':>9s} {'TB/s':>5s} | {'speed-up':>8s} | "
      f"{'equal':5s} max |diff|", flush=True)
for size in args.sizes:
    Bsz, L = (int(v) for v in size.split("x"))
    x, w, b = conv_inputs(Bsz, args.channels, L)
    outs, times = {}, {}
    for label, groups in KERNELS.items():
        conv.FWD_GROUPS = groups
        outs[label] = conv.conv_forward(x, w, b, True)
        times[label] = triton.testing.do_bench(lambda: conv.conv_forward(x, w, b, True), warmup=10, rep=100,
                                               return_mode="median")
    conv.FWD_GROUPS = True
    gb = 2 * x.numel() * x.element_size() / 1e9
    diff = (outs["groups"].float() - outs["taps"].float()).abs().max().item()
    print(f"{size:>10s} {args.channels:5d} | {times['taps']:8.3f} {gb / times['taps']:5.2f} | "
          f"{times['groups']:9.3f} {gb / times['groups']:5.2f} | {times['taps'] / times['groups']:7.2f}x | "
          f"{str(torch.equal(outs['groups'], outs['taps'])):5s} {diff:.3g}", flush=True)
if args.step:
    from helix.reporting import table1

    setup = table1.BenchSetup("cuda", num_classes=1313, steps=5, warmup=1)
    for variant, name in (("HELIX (SDPA)", "helix_raw"), ("Pure Mamba", "pure_mamba_raw")):
        for label in ("taps", "groups", "taps", "groups"):  # twice each, alternating: drift shows
            conv.FWD_GROUPS = KERNELS[label]
            r = table1.measure_step(variant, name, {"attention_impl": "sdpa"} if "HELIX" in variant else {},
                                    tokens=30000, batch=8, setup=setup)
            print(f"{variant:13s} B=8 conv fwd {label:6s} {r.step_ms:8.1f} ms {r.peak_gb:.3f} GB {r.status}",
                  flush=True)
    conv.FWD_GROUPS = True
