"""A CPU model's first forward + backward in a fresh process, with the numba kernels' on-disk cache empty
(what the first process of a fresh clone or environment pays) and then warm (asserts nothing).

    .venv/bin/python benchmarks/bench_cold_import.py

The cache goes to a temporary ``NUMBA_CACHE_DIR``, so the repository's own cache is left alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

SNIPPET = """
import time
start = time.perf_counter()
import torch
from helix.models import create_model
model = create_model('helix_raw', 5, d_model=16, pattern='MMAM')
model(torch.randn(2, 1600)).sum().backward()
print(f"{time.perf_counter() - start:.1f}")
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for label in ("empty cache", "warm cache"):
            run = subprocess.run([sys.executable, "-c", SNIPPET], env=env, capture_output=True, text=True, check=True)
            print(f"{label}: import, build and first fwd+bwd {run.stdout.strip()} s")


if __name__ == "__main__":
    main()
