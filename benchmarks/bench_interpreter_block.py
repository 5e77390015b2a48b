"""One BiMamba block's forward + backward through Triton's interpreter, as the CPU test suite runs it
(asserts nothing; the outputs and gradients of the modes are compared bit for bit and the result printed).

    .venv/bin/python benchmarks/bench_interpreter_block.py

Modes, each in a fresh process (the patches are module state): ``upstream-combines`` runs every scan combine
through the interpreter's own operations with the shipped ``fill`` (the suite before session 22);
``numpy-combines`` takes ``tests/ops/conftest.py``'s NumPy combines and reduces; ``numpy-combines+fill0`` also
keeps small launches unsplit, as the suite's fixture does.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = ("upstream-combines", "numpy-combines", "numpy-combines+fill0")


def _one(mode: str, out: str) -> None:
    os.environ["TRITON_INTERPRET"] = "1"
    sys.path.insert(0, str(ROOT / "tests" / "ops"))
    import conftest  # noqa: F401  (patches the interpreter)
    import torch

    from helix.layers.bimamba import BiMambaBlock
    from helix.ops.selective_scan import triton as kernels

    if mode == "upstream-combines":
        conftest._NUMPY_COMBINES.clear()
        conftest._NUMPY_REDUCES.clear()
    if mode.endswith("fill0"):
        kernels.DEFAULT_CONFIG.fill = kernels.LEAN_CONFIG.fill = 0
    torch.manual_seed(0)
    block = BiMambaBlock(16, d_state=16, scan_backend="triton", lean=True)
    x = torch.randn(2, 70, 16, requires_grad=True)
    start = time.perf_counter()
    y = block(x)
    y.backward(torch.randn_like(y))
    print(f"{mode:22s} fwd+bwd {time.perf_counter() - start:6.1f} s", flush=True)
    torch.save([y.detach(), x.grad] + [p.grad for p in block.parameters()], out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode:
        return _one(args.mode, args.out)
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        outs = []
        for mode in MODES:
            outs.append(os.path.join(tmp, f"{mode}.pt"))
            subprocess.run([sys.executable, __file__, "--mode", mode, "--out", outs[-1]], check=True,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"),
                                                                             os.environ.get("PYTHONPATH", "")])})
        results = [torch.load(o) for o in outs]
    same = all(torch.equal(a, b) for r in results[1:] for a, b in zip(results[0], r))
    print(f"outputs and gradients bit-equal across modes ({len(results[0])} tensors): {same}")


if __name__ == "__main__":
    main()
