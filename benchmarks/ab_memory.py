"""Same-run A/B of the 300 s training step over the session-20 memory and traffic switches.

Each setting is a comma-separated list of switches (or ``base``: all off, 2 chunk-state layers):

- ``dpre``: the conv backward's dpre scratch in bf16 (``causal_conv.triton.DPRE_LOW_PRECISION``);
- ``xhat``: the blocks' pre-norms save fp16 xhat instead of the fp32 stream (``layer_norm.triton.SAVE_XHAT``);
- ``fe``: the raw frontend recomputed in backward (``models.backbone.CHECKPOINT_FRONTEND``);
- ``s3``, ``s4``, ``s5``: that many BiMamba layers before the last keep their chunk states
  (``models.backbone.KEPT_STATE_LAYERS``).

    PYTHONPATH=src python3 benchmarks/ab_memory.py --batch 8 --settings base dpre dpre,xhat,fe,s4

Prints step time and peak memory per (batch, variant, setting); asserts nothing.
"""

import argparse

from helix.models import backbone
from helix.ops.causal_conv import triton as conv
from helix.ops.layer_norm import triton as ln
from ab_common import step_per_setting

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--batch", type=int, nargs="+", default=[8])
p.add_argument("--tokens", type=int, default=30000)
p.add_argument("--steps", type=int, default=5)
p.add_argument("--settings", nargs="+", default=["base", "dpre,xhat,fe,s4"])
p.add_argument("--variants", nargs="+", default=["Pure Mamba", "HELIX (SDPA)"])
args = p.parse_args()


def apply(setting: str) -> None:
    flags = set() if setting == "base" else set(setting.split(","))
    unknown = flags - {"dpre", "xhat", "fe", "s3", "s4", "s5"}
    if unknown:
        raise SystemExit(f"unknown switches {sorted(unknown)} in {setting!r}")
    conv.DPRE_LOW_PRECISION = "dpre" in flags
    ln.SAVE_XHAT = "xhat" in flags
    backbone.CHECKPOINT_FRONTEND = ("cuda",) if "fe" in flags else ()
    backbone.KEPT_STATE_LAYERS = next((int(f[1]) for f in sorted(flags) if f in ("s3", "s4", "s5")), 2)


step_per_setting(apply, args.settings, args.batch, args.variants, args.tokens, args.steps)
