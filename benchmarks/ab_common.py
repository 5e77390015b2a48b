"""Shared parts of the same-run A/B scripts (``ab_*.py``): conv inputs and the 300 s step per setting."""

from __future__ import annotations

import torch

VARIANTS = {"Pure Mamba": "pure_mamba_raw", "HELIX (SDPA)": "helix_raw"}


def conv_inputs(Bsz: int, C: int, L: int):
    """x (B, C, L) bf16, w (C, 4) and b (C,) fp32 on the GPU, seeded."""
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(Bsz, C, L, device="cuda", generator=g).bfloat16()
    w = torch.randn(C, 4, device="cuda", generator=g) * 0.5
    b = torch.randn(C, device="cuda", generator=g) * 0.5
    return x, w, b


def step_per_setting(apply, settings, batches=(8,), variants=tuple(VARIANTS), tokens=30000, steps=5) -> None:
    """Time the training step (Table 1's measurement) for every (batch, variant, setting), calling
    ``apply(setting)`` before each; prints step time and peak memory."""
    from helix.reporting import table1

    setup = table1.BenchSetup("cuda", num_classes=1313, steps=steps, warmup=1)
    for batch in batches:
        for variant in variants:
            for setting in settings:
                apply(setting)
                r = table1.measure_step(variant, VARIANTS[variant],
                                        {"attention_impl": "sdpa"} if "HELIX" in variant else {},
                                        tokens=tokens, batch=batch, setup=setup)
                print(f"{variant:13s} B={batch:2d} {setting:18s} {r.step_ms:8.1f} ms {r.peak_gb:.3f} GB {r.status}",
                      flush=True)
