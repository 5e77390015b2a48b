"""Time SDPA's backends on the attention block's shapes (forward + backward), on one GPU.

    python benchmarks/bench_attention.py [--batch 8 32] [--tokens 30000] [--heads 4] [--head-dim 64]

HELIX's attention block at 300 s raw is one (B, 4, 30,000, 64) bf16 attention without a mask. Which
kernel SDPA picks decides most of the block's cost, so this times each backend that accepts the
shape (FlashAttention-2, cuDNN, memory-efficient) and reports its difference from FlashAttention's
output and gradients. Prints a markdown table; asserts nothing.
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
        q.grad = k.grad = v.grad = None
        run(backend, q, k, v, g)
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3 / repeats, (torch.cuda.max_memory_allocated() - base) / 1e9


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    p.add_argument("--tokens", type=int, default=30000)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    print("| B | L | backend | fwd+bwd ms | TFLOP/s | peak GB | max |out - flash| | max |dq - flash| |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for b in args.batch:
        gen = torch.Generator(device="cuda").manual_seed(0)
        shape = (b, args.heads, args.tokens, args.head_dim)
        q, k, v, g = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(4))
        for t in (q, k, v):
            t.requires_grad_(True)
        flops = 4 * b * args.heads * args.tokens ** 2 * args.head_dim * 3.5  # forward 1, backward 2.5
        ref = None
        for name, backend in BACKENDS.items():
            try:
                ms, peak = time_backend(backend, q, k, v, g, args.repeats)
                q.grad = k.grad = v.grad = None
                out = run(backend, q, k, v, g).detach().float()
                dq = q.grad.detach().float()
            except RuntimeError as err:  # the backend does not take this shape here
                print(f"| {b} | {args.tokens} | {name} | not available: {str(err).splitlines()[0][:80]} | | | | |")
                continue
            if ref is None:
                ref = (out, dq)
            d_out = (out - ref[0]).abs().max().item()
            d_dq = (dq - ref[1]).abs().max().item()
            print(f"| {b} | {args.tokens} | {name} | {ms:.1f} | {flops / ms / 1e9:.0f} | {peak:.2f} | {d_out:.2e} | {d_dq:.2e} |",
                  flush=True)
        del q, k, v, g, ref
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
