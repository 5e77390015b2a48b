"""Launch shapes of the two streaming kernels (asserts nothing): the chunk carry and the conv forward.

    PYTHONPATH=src python3 benchmarks/sweep_stream_kernels.py --kernel carry --sizes 8x30000 32x500 1x300000
    PYTHONPATH=src python3 benchmarks/sweep_stream_kernels.py --kernel carry --states bfloat16 --sizes 8x30000
    PYTHONPATH=src python3 benchmarks/sweep_stream_kernels.py --kernel conv --sizes 8x30000

Shapes are the BiMamba block's: D = 1,024 channels (both directions), N = 32, K = 4. Every shape's output
is compared with the library's launch (carry: largest difference; conv: equal or not). Time: median of
``triton.testing.do_bench``; TB/s counts the buffer read and written once.
"""

from __future__ import annotations

import argparse

import torch
import triton

from helix.ops.causal_conv import triton as conv
from helix.ops.selective_scan import triton as scan
from helix.ops.selective_scan.chunk_state import _chunk_carry

D, N, K = 1024, 32, 4


def sweep_carry(Bsz: int, L: int, top: int, states: torch.dtype = torch.float32) -> None:
    """``states``: the chunk-state buffers' dtype (bfloat16: the lean block's, ``LEAN_CONFIG``)."""
    n_chunks = triton.cdiv(L, 32)
    g = torch.Generator(device="cuda").manual_seed(0)
    S0 = torch.randn(Bsz, D, n_chunks + 1, N, device="cuda", generator=g).to(states)
    # decays exp(A Sigma) <= e^-2: repeated in-place runs (the timing) stay finite
    Sig = 0.5 + torch.rand(Bsz, D, n_chunks, device="cuda", generator=g)
    A = -4.0 * (1.0 + torch.rand(D, N, device="cuda", generator=g))
    ref = scan._carry(S0.clone(), Sig, A, False, D // 2, True, False)
    gb = S0.numel() * S0.element_size() * 2 / 1e9
    S_lib = S0.clone()  # in place: S0 itself stays the input every shape is checked from
    t_lib = triton.testing.do_bench(lambda: scan._carry(S_lib, Sig, A, False, D // 2, True, False),
                                    warmup=5, rep=30, return_mode="median")
    rows = []
    for block_d in (1, 2, 4, 8):
        for cb in (8, 16, 32, 64):
            for warps in (1, 2, 4, 8):
                if cb * block_d < warps:
                    continue

                def go(S):
                    _chunk_carry[(triton.cdiv(D, block_d), Bsz)](
                        S, Sig, A, D, D // 2, N, n_chunks, BACKWARD=False, BIDIR=True, REVERSE=False,
                        CB=cb, BLOCK_D=block_d, BLOCK_N=N, num_warps=warps)
                    return S
                S = S0.clone()
                err = (go(S).float() - ref.float()).abs().max().item()
                # in place: repeated runs carry the carries, which changes values, not the work
                t = triton.testing.do_bench(lambda: go(S), warmup=5, rep=30, return_mode="median")
                rows.append((t, f"channels {block_d}, chunks/step {cb}, warps {warps}, max diff {err:.1e}"))
    _report(f"_chunk_carry B={Bsz} L={L} ({n_chunks} chunks, {states})", t_lib, gb, rows, top)


def sweep_conv(Bsz: int, L: int, top: int) -> None:
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(Bsz, D, L, device="cuda", generator=g).bfloat16()
    w = torch.randn(D, K, device="cuda", generator=g)
    b = torch.randn(D, device="cuda", generator=g)
    ref = conv.conv_forward(x, w, b, True)
    gb = x.numel() * 2 * 2 / 1e9
    t_lib = triton.testing.do_bench(lambda: conv.conv_forward(x, w, b, True), warmup=5, rep=40, return_mode="median")
    rows = []
    for bc in (1, 2, 4, 8, 16):
        for bt in (128, 256, 512, 1024, 2048):
            for warps in (1, 2, 4, 8):
                if bc * bt < warps * 32 or bc * bt > 16384:
                    continue
                out = torch.empty_like(x)

                def go():
                    conv._conv_fwd[(triton.cdiv(L, bt), triton.cdiv(D, bc), Bsz)](
                        x, w, b, b, out, D, L, D // 2, 1, x.stride(0), x.stride(1), K=K, BC=bc, BT=bt,
                        HAS_LEN=False, num_warps=warps)
                go()
                t = triton.testing.do_bench(go, warmup=5, rep=40, return_mode="median")
                rows.append((t, f"channels {bc}, steps {bt}, warps {warps}, equal {torch.equal(out, ref)}"))
    _report(f"_conv_fwd B={Bsz} L={L}", t_lib, gb, rows, top)


def _report(title: str, t_lib: float, gb: float, rows: list, top: int) -> None:
    print(f"{title}: the library's launch {t_lib:.3f} ms ({gb / t_lib:.2f} TB/s)")
    for t, what in sorted(rows)[:top]:
        print(f"  {t:.3f} ms ({gb / t:.2f} TB/s)  {what}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kernel", choices=["carry", "conv"], default="carry")
    p.add_argument("--sizes", nargs="+", default=["8x30000", "32x500", "1x300000"], help="BxL")
    p.add_argument("--top", type=int, default=8)
    p.add_argument("--states", choices=["float32", "bfloat16"], default="float32", help="carry: the buffers' dtype")
    args = p.parse_args(argv)
    for size in args.sizes:
        Bsz, L = (int(v) for v in size.split("x"))
        if args.kernel == "carry":
            sweep_carry(Bsz, L, args.top, getattr(torch, args.states))
        else:
            sweep_conv(Bsz, L, args.top)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
