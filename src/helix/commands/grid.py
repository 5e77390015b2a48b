"""``helix grid``: every backbone x frontend (x fold) of one preset, then the results table and plots.

    helix grid --config esc50                          # 3 backbones x 2 frontends x 5 folds
    helix grid --config speechcommands --frontends raw --epochs 30
    torchrun --standalone --nproc_per_node 2 -m helix.cli grid --config speechcommands

Runs go to ``<out>/<model>[/fold<k>]``; re-running the same command skips finished runs and resumes
interrupted ones from their ``last.pt``. Results: ``<out>/results.md``, ``results.csv``,
``accuracy.png`` (grouped bars, +-1 std) and ``curves.png`` (training curves).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from helix.commands._common import add_common_arguments, flag_overrides, parse_folds
from helix.names import BACKBONES, FRONTENDS

BACKBONE_NAMES = tuple(BACKBONES)
FRONTEND_NAMES = FRONTENDS


def _names(text: str, allowed: tuple[str, ...], what: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise ValueError(f"--{what} takes a comma-separated subset of {', '.join(allowed)}; got {text!r}")
    return names


def register(subparsers) -> None:
    p = subparsers.add_parser("grid", help="train backbones x frontends (x folds) and tabulate the results",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(p)
    p.add_argument("--backbones", default=",".join(BACKBONE_NAMES), help="comma-separated backbones")
    p.add_argument("--frontends", default=",".join(FRONTEND_NAMES), help="comma-separated frontends")
    p.add_argument("--out", metavar="DIR", help="grid folder (default runs/grid-<preset>)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from helix.training.config_io import load_config

    if not args.config:
        raise ValueError("--config is required (a preset name or a YAML file)")
    backbones = _names(args.backbones, BACKBONE_NAMES, "backbones")
    frontends = _names(args.frontends, FRONTEND_NAMES, "frontends")
    from helix.core.rundir import check_run_folder

    out = check_run_folder(Path(args.out or Path("runs") / f"grid-{Path(args.config).stem}"))
    base = flag_overrides(args)
    configs = [load_config(args.config, base + [f"model.name={b}_{f}", f"out_dir={out / f'{b}_{f}'}"]
                           + list(args.overrides)) for f in frontends for b in backbones]

    from helix.reporting.report import build_report
    from helix.core.distributed import cleanup_distributed, setup_distributed
    from helix.training.kfold import run_experiment
    from helix.training.loop import resolve_device

    try:
        for cfg in configs:
            run_experiment(cfg, folds=parse_folds(args.folds), resume=True, skip_finished=True)
        env = setup_distributed("cuda" if resolve_device(configs[0].device).type == "cuda" else "cpu")
        if env.is_main:
            written = build_report([out], out)
            print(Path(written["markdown"]).read_text())
            print("wrote " + ", ".join(str(p) for p in written.values()))
    finally:
        cleanup_distributed()
    return 0
