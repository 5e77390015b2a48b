"""``helix train``: train one model on one dataset (every fold of a fold dataset) from a preset.

    helix train --config esc50 --model helix_raw --fold 1
    helix train --config speechcommands --epochs 20 optim.lr=1e-3 model.overrides.d_model=128
    helix train --out runs/esc50/helix_raw --resume            # continue a killed run
    helix train --out runs/esc50/helix_raw --resume --allow-changes optim.lr optim.lr=3e-5   # after a NaN stop
    HELIX_OVERRIDES="optim.epochs=1 model.num_layers=2" helix train --config esc50 --fold 1  # a quick try
    torchrun --standalone --nproc_per_node 2 -m helix.cli train --config speechcommands
"""

from __future__ import annotations

import argparse
from pathlib import Path

from helix.commands._common import add_common_arguments, flag_overrides, parse_folds


def resolve_train_config(args: argparse.Namespace):
    """Preset/YAML + flags + overrides -> TrainConfig; ``--resume`` without ``--config`` reads the run's config.yaml."""
    from helix.training.config import TrainConfig
    from helix.training.config_io import load_config

    overrides = flag_overrides(args) + list(args.overrides)
    if getattr(args, "init", None):
        overrides.insert(0, f"init={args.init}")  # a later init=... override still wins
    if args.config is None:
        stored = Path(args.out or "") / "config.yaml"
        if args.resume and args.out and stored.is_file():
            return load_config(str(stored), overrides)
        raise ValueError("--config is required (a preset name or a YAML file), unless --resume names an "
                         "existing run with --out")
    cfg = load_config(args.config, overrides)
    if cfg.out_dir == TrainConfig.out_dir:
        # a per-experiment default, so two presets or models never write into the same folder
        out = Path("runs") / Path(args.config).stem / cfg.model.name
        cfg.out_dir = str(out / f"fold{cfg.data.fold}" if cfg.data.fold else out)
    return cfg


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a model from a config preset",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(p)
    p.add_argument("--model", help="model.name, e.g. pure_mamba_raw, helix_mel (see helix.models.list_models)")
    p.add_argument("--out", metavar="RUN_DIR", help="out_dir (default runs/<preset>/<model>)")
    p.add_argument("--fold", type=int, help="data.fold: train one fold of a fold dataset")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--init", metavar="CHECKPOINT",
                   help="init: start from this checkpoint's weights (fine-tuning; the classifier head is "
                        "re-initialised when the classes differ; see model.freeze_backbone, optim.backbone_lr_scale)")
    p.add_argument("--allow-changes", metavar="KEY[,KEY...]", default="",
                   help="with --resume: optimiser settings that may differ from the run's config "
                        "(optim.lr, optim.min_lr, optim.weight_decay, optim.betas, optim.grad_clip)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    allow = tuple(k.strip() for k in args.allow_changes.split(",") if k.strip())
    if allow and not args.resume:
        raise ValueError("--allow-changes applies to --resume (a new run takes any settings)")
    cfg = resolve_train_config(args)
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    from helix.core.distributed import cleanup_distributed
    from helix.training.kfold import run_experiment
    from helix.training.loop import check_allowed_changes

    check_allowed_changes(allow)
    try:
        run_experiment(cfg, folds=parse_folds(args.folds), resume=args.resume, allow_changes=allow)
    finally:
        cleanup_distributed()
    return 0
