"""The causal conv's backward with its dpre scratch in fp32 or in the input's bf16
(``causal_conv.triton.DPRE_LOW_PRECISION``): time per backward and dx's error against float64.

    PYTHONPATH=src python3 benchmarks/ab_conv_dpre.py --sizes 8x30000 32x3000 1x300000

C = 1,024 channels (both directions of the paper's block), K = 4, bf16 x and dout. Asserts nothing.
"""

import argparse

import torch
import triton.testing

from helix.ops.causal_conv import causal_conv1d_silu_reference
from helix.ops.causal_conv import triton as conv

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--sizes", nargs="+", default=["8x30000", "32x3000", "1x300000"])
p.add_argument("--channels", type=int, default=1024)
args = p.parse_args()


def rel(a, b):
    return ((a.double() - b).norm() / b.norm()).item()


for size in args.sizes:
    B, L = map(int, size.split("x"))
    C = args.channels
    torch.manual_seed(0)
    x = torch.randn(B, C, L, device="cuda").bfloat16()
    w, b = torch.randn(C, 4, device="cuda") * 0.5, torch.randn(C, device="cuda")
    g = torch.randn(B, C, L, device="cuda").bfloat16()
    xr = x[:1].double().requires_grad_()  # the error on the first clip (float64 on the GPU)
    causal_conv1d_silu_reference(xr, w.double(), b.double(), bidirectional=True).backward(g[:1].double())
    for low in (False, True):
        conv.DPRE_LOW_PRECISION = low
        dx = conv.conv_backward(x, w, b, g, True)[0]
        ms = triton.testing.do_bench(lambda: conv.conv_backward(x, w, b, g, True), warmup=10, rep=50)
        print(f"conv bwd {B}x{L} C={C} dpre {'bf16' if low else 'fp32'}: {ms:.3f} ms, "
              f"dx error vs float64 {rel(dx[:1], xr.grad):.2e}", flush=True)
