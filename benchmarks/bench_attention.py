"""Time SDPA's backends on the attention block's shapes (forward + backward), on one GPU.

    python benchmarks/bench_attention.py [--batch 8 32] [--tokens 30000] [--heads 4] [--head-dim 64]
    python benchmarks/bench_attention.py --batch 8 --backends cudnn --layouts packed bhld blhd

HELIX's attention block at 300 s raw is one (B, 4, 30,000, 64) bf16 attention without a mask. Which
kernel SDPA picks decides most of the block's cost, so this times each backend that accepts the
shape (FlashAttention-2, cuDNN, memory-efficient) and reports its difference from the first backend's
output and gradients. ``--layouts``: q, k, v as contiguous (B, H, L, Dh) tensors (``bhld``, the
default), as the block passes them (``packed``: views of one (B, L, 3, H, Dh) projection) or as
(B, L, H, Dh) tensors seen transposed (``blhd``); the latter two may pay a copy of the gradients into
their leaves' strides (about 0.1 ms at 300 s, B=8). Prints a markdown table; asserts nothing.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}


def run(backend, q, k, v, g):
    with sdpa_kernel([backend]):
        out = F.scaled_dot_product_attention(q, k, v)
        out.backward(g)
    return out


def time_backend(backend, q, k, v, g, repeats: int) -> tuple[float, float]:
    """(ms per forward + backward, peak GB above the inputs)."""
    for _ in range(2):
        run(backend, q, k, v, g)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(repeats):
        run(backend, q, k, v, g)
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3 / repeats, (torch.cuda.max_memory_allocated() - base) / 1e9


def make_qkv(b, heads, tokens, head_dim, layout, gen):
    """q, k, v (B, H, L, Dh) bf16 leaves in ``layout`` and the output gradient g."""
    kw = dict(device="cuda", dtype=torch.bfloat16, generator=gen)
    g = torch.randn(b, heads, tokens, head_dim, **kw)
    if layout == "packed":
        qkv = torch.randn(b, tokens, 3, heads, head_dim, **kw)
        leaves = [t.transpose(1, 2).requires_grad_(True) for t in qkv.unbind(2)]  # leaves with the block's strides
        return (*leaves, g, leaves)
    if layout == "blhd":
        leaves = [torch.randn(b, tokens, heads, head_dim, **kw).requires_grad_(True) for _ in range(3)]
        return (*[t.transpose(1, 2) for t in leaves], g, leaves)
    leaves = [torch.randn(b, heads, tokens, head_dim, **kw).requires_grad_(True) for _ in range(3)]
    return (*leaves, g, leaves)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    p.add_argument("--tokens", type=int, default=30000)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    p.add_argument("--layouts", nargs="+", default=["bhld"], choices=["bhld", "packed", "blhd"])
    args = p.parse_args(argv)
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    print("| B | L | layout | backend | fwd+bwd ms | TFLOP/s | peak GB | max |out - first| | max |dq - first| |")
    print("|---:|---:|---|---|---:|---:|---:|---:|---:|")
    for b in args.batch:
        flops = 4 * b * args.heads * args.tokens ** 2 * args.head_dim * 3.5  # forward 1, backward 2.5
        ref = None
        for layout in args.layouts:
            gen = torch.Generator(device="cuda").manual_seed(0)
            q, k, v, g, leaves = make_qkv(b, args.heads, args.tokens, args.head_dim, layout, gen)
            for name in args.backends:
                try:
                    ms, peak = time_backend(BACKENDS[name], q, k, v, g, args.repeats)
                    for t in leaves:
                        t.grad = None
                    out = run(BACKENDS[name], q, k, v, g).detach().float()
                    dq = leaves[0].grad.detach().float().reshape(-1)
                except RuntimeError as err:  # the backend does not take this shape here
                    print(f"| {b} | {args.tokens} | {layout} | {name} | not available: "
                          f"{str(err).splitlines()[0][:80]} | | | | |")
                    continue
                if ref is None or ref[0].shape != out.shape:
                    ref = (out, dq)
                d_out = (out - ref[0]).abs().max().item()
                d_dq = (dq.sort().values - ref[1].sort().values).abs().max().item()  # layouts order dq apart
                print(f"| {b} | {args.tokens} | {layout} | {name} | {ms:.1f} | {flops / ms / 1e9:.0f} | {peak:.2f} "
                      f"| {d_out:.2e} | {d_dq:.2e} |", flush=True)
            del q, k, v, g, leaves
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
