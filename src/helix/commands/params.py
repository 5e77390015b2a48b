"""``helix params``: per-layer and total parameter counts of every variant (eq. 10 matching).

    helix params --num-classes 1313                 # VoxPopuli's 1313 speakers (the default)
    helix params --num-classes 50 --d-model 128
"""

from __future__ import annotations

import argparse

from helix.names import BACKBONES, FRONTENDS


def register(sub) -> None:
    p = sub.add_parser("params", help="print parameter counts per layer and per variant",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-classes", type=int, default=1313, help="classifier size (default 1313, VoxPopuli)")
    p.add_argument("--d-model", type=int, default=256, help="layer width D (default 256, the paper's)")
    p.add_argument("--d-state", type=int, default=32, help="SSM state size N (default 32, the paper's)")
    p.set_defaults(func=run)


def run(args) -> int:
    from helix.models import create_model, parameter_report
    from helix.models.params import bimamba_parameters

    if args.num_classes <= 0:
        raise ValueError(f"--num-classes must be positive, got {args.num_classes}")
    kw = {"d_model": args.d_model, "d_state": args.d_state}
    print(f"d_model={args.d_model}  d_state={args.d_state}  classes={args.num_classes}")
    print(f"BiMamba block (closed form): {bimamba_parameters(args.d_model, args.d_state, 4, 2, -(-args.d_model // 16)):,}")
    header = f"{'variant':22s} {'frontend':>9s} {'layers (type:count)':>44s} {'norm+head':>10s} {'total':>11s} {'gap':>7s}"
    print(header)
    print("-" * len(header))
    for backbone in BACKBONES:
        for frontend in FRONTENDS:
            name = f"{backbone}_{frontend}"
            model = create_model(name, args.num_classes, **kw)
            r = parameter_report(model)
            per_type = "  ".join(f"{k}:{v:,}" for k, v in r["per_type"].items())
            layers = f"{model.config.pattern} {per_type}"
            print(f"{name:22s} {r['frontend']:>9,} {layers:>44s} {r['final_norm'] + r['head']:>10,} "
                  f"{r['total']:>11,} {100 * r['max_relative_gap']:>6.3f}%")
    print(f"attention FFN width from eq. (10): {model.d_ffn}")
    print("gap = largest relative difference between a BiMamba and an attention layer's count")
    return 0
