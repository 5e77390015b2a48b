"""Same-run A/B of the 300 s training step over the Gluon backward scan's variants (asserts nothing).

A setting names how the backward gets a_{t+1} (``exp`` or ``shift``: ``ScanConfig.bwd_next``), then
optionally where its accumulators live (``acc``, ``accbc``: ``bwd_smem``) and a register cap (``r200``):

    PYTHONPATH=src python3 benchmarks/ab_scan_bwd.py --batch 8 --settings exp shift-acc shift-accbc-r200 exp

Each setting is applied to both scan configs the model uses (``DEFAULT_CONFIG``, ``LEAN_CONFIG``); list a
setting twice to see the drift between runs. Prints step time and peak memory per (batch, variant, setting).
"""

import argparse

from helix.ops.selective_scan import triton as scan
from ab_common import step_per_setting

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--batch", type=int, nargs="+", default=[8])
p.add_argument("--tokens", type=int, default=30000)
p.add_argument("--steps", type=int, default=5)
p.add_argument("--settings", nargs="+", default=["exp", "shift-acc", "exp"])
p.add_argument("--variants", nargs="+", default=["Pure Mamba", "HELIX (SDPA)"])
args = p.parse_args()
SMEM = {"acc": "acc", "accbc": "acc+bc"}


def apply(setting: str) -> None:
    parts = setting.split("-")
    if parts[0] not in ("exp", "shift"):
        raise SystemExit(f"a setting starts with exp or shift: {setting!r}")
    smem = next((SMEM[q] for q in parts[1:] if q in SMEM), "none")
    cap = next((int(q[1:]) for q in parts[1:] if q.startswith("r") and q[1:].isdigit()), None)
    for cfg in (scan.DEFAULT_CONFIG, scan.LEAN_CONFIG):
        cfg.bwd_next, cfg.bwd_smem, cfg.bwd_maxnreg = parts[0], smem, cap


step_per_setting(apply, args.settings, args.batch, args.variants, args.tokens, args.steps)
