"""Same-run A/B of the 300 s training step (B=8, 30,000 raw tokens) between two source trees.

The Table 1 timing code moved (helix.evaluation.bench -> helix.reporting.table1), so the module is
an argument; run each tree with its own PYTHONPATH in one device call:

    git archive 402d343 src | tar -x -C .old
    PYTHONPATH=.old/src python3 benchmarks/ab_step.py helix.evaluation.bench
    PYTHONPATH=src python3 benchmarks/ab_step.py helix.reporting.table1
"""

import importlib
import sys

mod = importlib.import_module(sys.argv[1])
setup = mod.BenchSetup("cuda", num_classes=1313, steps=5, warmup=1)
for variant, name in (("Pure Mamba", "pure_mamba_raw"), ("HELIX (SDPA)", "helix_raw")):
    r = mod.measure_step(variant, name, {"attention_impl": "sdpa"} if "HELIX" in variant else {}, tokens=30000,
                         batch=8, setup=setup)
    print(sys.argv[1], variant, round(r.step_ms, 1), "ms", r.peak_gb, "GB", r.status, flush=True)
