"""``helix report``: rebuild the results table (Markdown + CSV) and plots from finished run folders.

    helix report runs/grid-esc50                       # every run below the folder
    helix report runs/a runs/b --out reports/ab --no-plots
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="results table and plots from run folders",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders, or folders containing them")
    p.add_argument("--out", metavar="DIR", help="where to write (default: the single RUN_DIR, else ./report)")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from helix.reporting.report import build_report

    out = Path(args.out) if args.out else (Path(args.run_dirs[0]) if len(args.run_dirs) == 1 else Path("report"))
    written = build_report(args.run_dirs, out, plots=not args.no_plots)
    print(Path(written["markdown"]).read_text())
    print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0
