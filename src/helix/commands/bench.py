"""``helix bench``: training-step time, tokens/s and peak memory per backbone and length (Table 1).

    helix bench --device cuda --tokens 500 3000 30000 --extend --batch 8 --out runs/bench
    helix bench --device cpu --tokens 50 100 200 --out runs/bench-cpu
"""

from __future__ import annotations

import argparse
import shlex
import sys



def register(sub) -> None:
    p = sub.add_parser("bench", help="time a training step of each backbone at several sequence lengths",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--tokens", type=int, nargs="+", default=None,
                   help="token counts, 100 per second of audio (default: 500 3000 30000 on GPU, 50 100 200 on CPU)")
    p.add_argument("--extend", action="store_true", help="keep doubling the longest count until all run out of memory")
    p.add_argument("--max-tokens", type=int, default=2_000_000, help="upper bound for --extend")
    p.add_argument("--batch", type=int, nargs="+", default=[8], help="batch sizes (default 8)")
    p.add_argument("--variants", nargs="+", default=None, help="subset of variant labels (default: all)")
    p.add_argument("--recompute", action="store_true", help="also run every variant with activation recomputation")
    p.add_argument("--steps", type=int, default=3, help="timed steps (default 3, after --warmup)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before the timed ones (default 1)")
    p.add_argument("--num-classes", type=int, default=1313, help="classifier size (default 1313, VoxPopuli)")
    p.add_argument("--scan-backend", default="auto", choices=["auto", "reference", "triton"],
                   help="selective-scan implementation (default auto: Triton on CUDA, the reference elsewhere)")
    p.add_argument("--out", default="runs/bench", help="folder for bench.md, bench.csv, bench.png")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from helix.reporting.table1 import BenchSetup, environment, resolve_variants, run_benchmark, write_outputs

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but no CUDA device is available")
    for name in ("steps", "num_classes", "max_tokens"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive")
    if args.warmup < 0 or any(b <= 0 for b in args.batch):
        raise ValueError("--warmup must be >= 0 and --batch values positive")
    tokens = args.tokens or ([500, 3000, 30000] if device.startswith("cuda") else [50, 100, 200])
    if any(t <= 0 for t in tokens):
        raise ValueError("--tokens values must be positive")
    variants = resolve_variants(args.variants, args.recompute)
    setup = BenchSetup(device, args.num_classes, args.steps, args.warmup, args.scan_backend)
    env = environment(device)
    print("environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), flush=True)
    argv = sys.argv[1:]
    argv = argv[1:] if argv[:1] == ["bench"] else argv
    command = " ".join(["helix bench", *(shlex.quote(a) for a in argv)])
    done = []

    def log(line, result):
        print(line, flush=True)
        done.append(result)
        write_outputs(done, args.out, env, command)  # rewritten as results come: a killed run keeps them

    results = run_benchmark(setup, tokens, args.batch, variants, args.extend, args.max_tokens, log=log)
    paths = write_outputs(results, args.out, env, command)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    # ``python -m helix.commands.bench``: the same command without importing the other subcommands
    # (and their optional dependencies), e.g. on a GPU machine with only torch installed
    _parser = argparse.ArgumentParser(prog="helix")
    register(_parser.add_subparsers())
    _args = _parser.parse_args(["bench", *sys.argv[1:]])
    sys.exit(_args.func(_args))
