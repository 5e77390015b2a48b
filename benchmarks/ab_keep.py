"""Same-run A/B of the 300 s training step over what the lean BiMamba layers keep for backward
(``models.backbone.keep_activations``): nothing, the last layer's activations only, or those plus the
chunk states of the ``KEPT_STATE_LAYERS`` BiMamba layers before it (the default, 4 since session 20;
``states2``, ``states3``: 2, 3).

    PYTHONPATH=src python3 benchmarks/ab_keep.py --batch 8 32 --settings none last default

Prints step time and peak memory per (variant, batch, setting); asserts nothing.
"""

import argparse

from helix.models import backbone
from helix.reporting import table1

SETTINGS = {"none": None, "last": 0, "default": backbone.KEPT_STATE_LAYERS, "states2": 2, "states3": 3}
p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--batch", type=int, nargs="+", default=[8])
p.add_argument("--tokens", type=int, default=30000)
p.add_argument("--steps", type=int, default=5)
p.add_argument("--settings", nargs="+", default=["none", "default"], choices=sorted(SETTINGS))
p.add_argument("--variants", nargs="+", default=["Pure Mamba", "HELIX (SDPA)"])
args = p.parse_args()

keep = backbone.keep_activations
current = [None]  # KEPT_STATE_LAYERS for the next model, or None: nothing kept


def patched(layers, pattern):
    if current[0] is not None:
        backbone.KEPT_STATE_LAYERS = current[0]
        keep(layers, pattern)


backbone.keep_activations = patched
names = {"Pure Mamba": "pure_mamba_raw", "HELIX (SDPA)": "helix_raw"}
setup = table1.BenchSetup("cuda", num_classes=1313, steps=args.steps, warmup=1)
for batch in args.batch:
    for variant in args.variants:
        for setting in args.settings:
            current[0] = SETTINGS[setting]
            r = table1.measure_step(variant, names[variant], {"attention_impl": "sdpa"} if "HELIX" in variant else {},
                                    tokens=args.tokens, batch=batch, setup=setup)
            print(f"{variant:13s} B={batch:2d} {setting:8s} {r.step_ms:8.1f} ms {r.peak_gb:.3f} GB {r.status}",
                  flush=True)
