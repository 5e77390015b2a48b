"""The blocks' pre-norm: ``nn.LayerNorm`` under autocast plus the cast to bf16, against
``helix.ops.layer_norm`` (asserts nothing).

    PYTHONPATH=src python3 benchmarks/bench_layer_norm.py --rows 240000 16000 --D 256

Rows: B x L tokens (300 s at B=8 is 240,000; 5 s at B=32 is 16,000). Input fp32 (the residual
stream), output bf16. Time: median of ``triton.testing.do_bench``; GB/s counts x read and y written
(and in the backward x, dy read, dx written).
"""

from __future__ import annotations

import argparse

import torch
import triton

from helix.ops.layer_norm import layer_norm


def _time(fn) -> float:
    return triton.testing.do_bench(fn, warmup=25, rep=200)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[240_000, 16_000])
    p.add_argument("--D", type=int, default=256)
    args = p.parse_args(argv)
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    print(f"{'rows':>8} {'impl':8} {'fwd ms':>8} {'fwd GB/s':>9} {'f+b ms':>8} {'f+b GB/s':>9}")
    norm = torch.nn.LayerNorm(args.D).cuda()
    for M in args.rows:
        x = torch.randn(M, args.D, device="cuda", requires_grad=True)
        dy = torch.randn(M, args.D, device="cuda", dtype=torch.bfloat16)
        fwd_bytes = M * args.D * (4 + 2)
        bwd_bytes = M * args.D * (4 + 2 + 4)
        impls = {"torch": lambda: norm(x).to(torch.bfloat16),
                 "helix": lambda: layer_norm(x, norm.weight, norm.bias, norm.eps, torch.bfloat16)}
        for name, f in impls.items():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                fwd = _time(f)

                def both():
                    f().backward(dy)
                fb = _time(both)
            print(f"{M:8d} {name:8} {fwd:8.3f} {fwd_bytes / fwd / 1e6:9.0f} {fb:8.3f} "
                  f"{(fwd_bytes + bwd_bytes) / fb / 1e6:9.0f}")


if __name__ == "__main__":
    main()
