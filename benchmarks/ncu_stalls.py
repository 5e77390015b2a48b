"""Summarise Nsight Compute's source page of one kernel: stall samples by reason and by opcode, and the
shuffles, atomics and branch regions that drew samples (asserts nothing).

    ncu --section WarpStateStats --section SourceCounters -k regex:_bwd_scan_gluon -c 1 -o bwd \\
        python3 benchmarks/bench_scan.py --sizes 8x30000
    ncu -i bwd.ncu-rep --page source --csv --print-source sass > bwd.csv
    python3 benchmarks/ncu_stalls.py bwd.csv
"""

from __future__ import annotations

import collections
import csv
import sys

SAMPLES = "Warp Stall Sampling (All Samples)"


def summarise(path: str) -> None:
    rows = list(csv.reader(open(path)))
    hdr, data = rows[1], rows[2:]  # row 0 names the kernel
    ix = {h: i for i, h in enumerate(hdr)}
    reasons = [h for h in hdr if h.startswith("stall_") and "Not Issued" not in h]

    def num(row, col):
        try:
            return int(row[ix[col]] or 0)
        except ValueError:
            return 0

    by_reason = collections.Counter()
    by_op, op_reasons = collections.Counter(), collections.defaultdict(collections.Counter)
    for row in data:
        words = row[ix["Source"]].strip().split()
        op = (words[1] if words and words[0].startswith("@") else words[0] if words else "?").split(".")[0]
        by_op[op] += num(row, SAMPLES)
        for r in reasons:
            by_reason[r] += num(row, r)
            op_reasons[op][r] += num(row, r)
    total = sum(by_reason.values())
    print(f"stall samples {total}, by reason:")
    for r, v in by_reason.most_common(10):
        print(f"  {r:26s} {100 * v / total:5.1f}%")
    print("by opcode (share of samples; top reasons):")
    for op, v in by_op.most_common(12):
        top = ", ".join(f"{k[6:]} {100 * x / max(v, 1):.0f}%" for k, x in op_reasons[op].most_common(2))
        print(f"  {op:8s} {100 * v / total:5.1f}%  {top}")
    print("shuffles, atomics and branch regions with more than 0.1% of the samples:")
    for row in data:
        src = row[ix["Source"]].strip()
        if any(k in src for k in ("SHFL", "REDG", "BSSY", "BSYNC")) and num(row, SAMPLES) > 0.001 * total:
            print(f"  {100 * num(row, SAMPLES) / total:5.2f}%  {src[:70]}")


if __name__ == "__main__":
    summarise(sys.argv[1])
