"""``helix models``: list the registry with parameter counts; ``--smoke`` runs forward+backward of
every model on CPU.

    helix models                       # counts at 10 classes (the head grows with the class count)
    helix models --num-classes 35      # Speech Commands' head
    helix models --smoke --seconds 0.5
"""

from __future__ import annotations

import argparse
import time


def register(sub) -> None:
    p = sub.add_parser("models", help="list registered models with parameter counts (and smoke-test them)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-classes", type=int, default=10,
                   help="classifier size the parameters are counted at (default 10)")
    p.add_argument("--smoke", action="store_true", help="forward+backward of every model on a random batch")
    p.add_argument("--seconds", type=float, default=1.0, help="clip length for --smoke")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from helix.models import count_parameters, create_model, list_models

    if args.num_classes <= 0:
        raise ValueError(f"--num-classes must be positive, got {args.num_classes}")
    if not 0 < args.seconds < 3600:
        raise ValueError(f"--seconds must be in (0, 3600), got {args.seconds}")
    torch.manual_seed(0)
    wave = torch.randn(2, int(args.seconds * 16000)) * 0.1
    print(f"parameters with a {args.num_classes}-class head (--num-classes to change)")
    for name in list_models():
        model = create_model(name, num_classes=args.num_classes)
        line = f"{name:20s} {count_parameters(model):>12,} params"
        if args.smoke:
            t0 = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(wave), torch.tensor([0, 1]) % args.num_classes)
            loss.backward()
            missing = [n for n, p in model.named_parameters() if p.grad is None]
            if missing:
                raise RuntimeError(f"{name}: no gradient reached {missing[:3]}")
            line += f"   tokens={model.num_tokens(wave.shape[1]):5d}  fwd+bwd {time.perf_counter() - t0:6.2f} s  ok"
        print(line, flush=True)
    return 0
