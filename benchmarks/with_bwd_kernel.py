"""Run a benchmark with the Gluon backward scan kernel taken from another copy of ``gluon_bwd.py`` (an A/B
of two kernels in one process and tree; asserts nothing).

    git show e651be0:src/helix/ops/selective_scan/gluon_bwd.py > /tmp/gluon_bwd_before.py
    python3 benchmarks/with_bwd_kernel.py /tmp/gluon_bwd_before.py benchmarks/bench_scan.py --sizes 8x30000

The copy must take the same arguments as this tree's ``_bwd_scan_gluon``.
"""

from __future__ import annotations

import importlib.util
import runpy
import sys

import helix.ops.selective_scan.gluon_bwd as gluon_bwd

if __name__ == "__main__":
    spec = importlib.util.spec_from_file_location("gluon_bwd_other", sys.argv[1])
    other = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(other)
    gluon_bwd._bwd_scan_gluon = other._bwd_scan_gluon
    sys.argv = sys.argv[2:]
    runpy.run_path(sys.argv[0], run_name="__main__")
