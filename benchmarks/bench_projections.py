"""The fused BiMamba block's projections on the GPU: the broadcast ``bmm`` the block uses (channels-first
(B, C, L) activations, the layout the scan kernels read) against one token-major GEMM over B*L rows,
forward and weight gradient, ms per call (CUDA events, 50 calls after 5 warm-up). Asserts nothing.

    python3 benchmarks/bench_projections.py

Shapes: d_model 256, both directions stacked (2E = 1024, x_proj 160 rows, dt rank 2 x 16), bf16.
Rows: B, L, projection, then per variant: ``fwd_bmm`` (what the block runs), ``fwd_linear_tokmajor``
(``F.linear`` on a token-major copy), ``wgrad_bmm_sum`` (what the block runs: ``bmm`` then a sum over
the batch), ``wgrad_one_gemm_with_copies`` (channels moved first, then one GEMM), ``wgrad_einsum``,
``wgrad_tokmajor`` (one GEMM on token-major copies).
"""

from __future__ import annotations

import torch

SHAPES = (("in_x", 1024, 256), ("x_proj", 160, 1024), ("dt", 1024, 32), ("out", 256, 1024))


def ms_per_call(f, reps: int = 50) -> float:
    for _ in range(5):
        f()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        f()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def main() -> None:
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = True
    bf = torch.bfloat16
    for B, L in ((32, 500), (32, 80), (32, 100), (8, 30000)):
        h = torch.randn(B, L, 256, device="cuda", dtype=bf)
        for name, M, K in SHAPES:
            w = torch.randn(M, K, device="cuda", dtype=bf)
            x = h.transpose(1, 2) if name == "in_x" else torch.randn(B, K, L, device="cuda", dtype=bf)
            g = torch.randn(B, M, L, device="cuda", dtype=bf)
            xt = x.transpose(1, 2).contiguous()  # token-major twins
            gt = g.transpose(1, 2).contiguous()
            variants = {
                "fwd_bmm": lambda: torch.bmm(w.expand(B, -1, -1), x),
                "fwd_linear_tokmajor": lambda: torch.nn.functional.linear(xt, w),
                "wgrad_bmm_sum": lambda: torch.bmm(g, x.transpose(1, 2)).sum(0),
                "wgrad_one_gemm_with_copies":
                    lambda: g.transpose(0, 1).reshape(M, B * L) @ x.transpose(0, 1).reshape(K, B * L).t(),
                "wgrad_einsum": lambda: torch.einsum("bml,bkl->mk", g, x),
                "wgrad_tokmajor": lambda: gt.reshape(B * L, M).t() @ xt.reshape(B * L, K),
            }
            print(B, L, name, {k: round(ms_per_call(f), 4) for k, f in variants.items()}, flush=True)


if __name__ == "__main__":
    main()
