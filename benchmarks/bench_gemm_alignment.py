"""The BiMamba block's batched products at short L: row length and row stride against cuBLAS's kernel choice.

B=32, Dm=256, 2E=1024, bf16, (B, C, L) operands with row stride S (views of (B, C, S) buffers):

    python3 benchmarks/bench_gemm_alignment.py

RESULTS.md section 19: at L = 500 cuBLAS runs pre-Hopper kernels whatever the stride; at L = 512 it
runs its sm90 kernels, a third faster. Times are CUDA-event means of 50 calls after 5 warm-up calls.
"""

import torch
from bench_projections import ms_per_call as timed

B, DM, E2, R2, NN = 32, 256, 1024, 32, 128
DEV, DT = "cuda", torch.bfloat16


def rows(channels: int, L: int, stride: int) -> torch.Tensor:
    return torch.randn(B, channels, stride, device=DEV, dtype=DT)[..., :L]


def products(L: int, stride: int) -> dict[str, float]:
    h = torch.randn(B, L, DM, device=DEV, dtype=DT)
    w_x = torch.randn(E2, DM, device=DEV, dtype=DT)
    w_xp = torch.randn(R2 + 2 * NN, E2, device=DEV, dtype=DT)
    w_dt = torch.randn(E2, R2, device=DEV, dtype=DT)
    w_out = torch.randn(DM, E2, device=DEV, dtype=DT)
    u, g = rows(E2, L, stride), rows(E2, L, stride)
    xd, dt = rows(w_xp.shape[0], L, stride), rows(R2, L, stride)
    o_in, o_dbl, o_delta, o_out = rows(E2, L, stride), rows(w_xp.shape[0], L, stride), rows(E2, L, stride), \
        rows(DM, L, stride)

    def bmm(w, x, out):
        return torch.bmm(w.expand(B, -1, -1), x, out=out)

    return {
        "x_in=Wx h": timed(lambda: bmm(w_x, h.transpose(1, 2), o_in)),
        "x_dbl=Wxp u": timed(lambda: bmm(w_xp, u, o_dbl)),
        "delta=Wdt dt": timed(lambda: bmm(w_dt, dt, o_delta)),
        "out=Wout y": timed(lambda: bmm(w_out, u, o_out)),
        "dy=Wout^T g": timed(lambda: bmm(w_out.t(), o_out, o_in)),
        "dWx=g h": timed(lambda: torch.bmm(g, h).sum(0)),
        "dWxp=xd u^T": timed(lambda: torch.bmm(xd, u.transpose(1, 2)).sum(0)),
        "du=Wxp^T xd": timed(lambda: bmm(w_xp.t(), xd, o_in)),
        "dh=Wx^T g (tok)": timed(lambda: torch.bmm(g.transpose(1, 2), w_x.expand(B, -1, -1))),
    }


def main() -> None:
    torch.manual_seed(0)
    for L, stride in [(500, 500), (500, 504), (500, 512), (512, 512), (100, 100), (100, 104)]:
        r = products(L, stride)
        cells = "  ".join(f"{k} {v * 1000:.0f}us" for k, v in r.items())
        print(f"L={L} stride={stride}: total {sum(r.values()):.3f} ms  {cells}")


if __name__ == "__main__":
    main()
