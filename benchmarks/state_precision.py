"""Errors of the Triton scan against the float64 reference with fp32 or bf16 chunk-state storage.

    TRITON_INTERPRET=1 PYTHONPATH=src python3 benchmarks/state_precision.py      (CPU, ~10 minutes)
    PYTHONPATH=src python3 benchmarks/state_precision.py --L 30000 --block-t 32    (GPU)

bf16 inputs (the tests' ``make_inputs``: B=2, D=4, N=32), both directions; prints the relative L2
error of the output and of every gradient for ``ScanConfig(states="float32")`` and ``"bfloat16"``.
Asserts nothing: the tolerance tests are in ``tests/ops/test_selective_scan_triton.py``.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ops"))
import test_selective_scan_triton as scan_tests  # noqa: E402

from helix.ops.selective_scan.triton import ScanConfig  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--L", type=int, default=500)
    p.add_argument("--block-t", type=int, default=16)
    args = p.parse_args(argv)
    for states in ("float32", "bfloat16"):
        cfg = ScanConfig(block_t=args.block_t, dg=4, states=states)
        for reverse in (False, True):
            inputs = scan_tests.make_inputs(2, 4, args.L, 32, torch.bfloat16)
            (y, y_ref), grads = scan_tests.run_both(inputs, scan_tests.kernel_fn(reverse, cfg),
                                                    scan_tests.reference_fn(reverse))
            errors = " ".join(f"d{k} {scan_tests.rel(g, r):.2e}" for k, (g, r) in grads.items())
            print(f"L={args.L} block_t={args.block_t} states={states} reverse={reverse}: "
                  f"y {scan_tests.rel(y, y_ref):.2e} {errors}", flush=True)


if __name__ == "__main__":
    main()
