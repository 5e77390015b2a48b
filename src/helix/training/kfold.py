"""One experiment = one run, or one run per fold for fold datasets (ESC-50: 5, UrbanSound8K: 10).

Fold k trains on the other folds and tests on fold k; its run folder is ``<out_dir>/fold<k>``.
The experiment folder gets ``kfold_summary.json`` and the mean +- std of each accuracy over folds.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from helix.core.metrics import METRIC_NAMES, PAPER_PROTOCOL_LABEL, format_pct, mean_std
from helix.training.config import TrainConfig


def fold_configs(cfg: TrainConfig, folds: list[int] | None = None) -> list[TrainConfig]:
    """The configs to run: ``cfg`` itself for a single split or a chosen fold, else one per fold."""
    if cfg.data.num_folds is None or (cfg.data.fold is not None and not folds):
        if folds:
            raise ValueError(f"dataset {cfg.data.name!r} has no folds (data.num_folds is null)")
        return [cfg]
    folds = folds or list(range(1, cfg.data.num_folds + 1))
    out = []
    for k in folds:
        data = dataclasses.replace(cfg.data, fold=k)  # re-runs the range check
        out.append(dataclasses.replace(cfg, data=data, out_dir=str(Path(cfg.out_dir) / f"fold{k}")))
    return out


def run_experiment(cfg: TrainConfig, folds: list[int] | None = None, resume: bool = False,
                   verbose: bool = True, skip_finished: bool = False, allow_changes: tuple[str, ...] = ()) -> dict:
    """Train every fold config in turn -> ``{"runs": [summary, ...], "<acc>_mean"/"_std": ...}``.

    ``skip_finished`` reuses a run folder whose ``summary.json`` shows all planned epochs done
    (how ``helix grid`` is re-run after an interruption); ``allow_changes`` goes to each
    :class:`~helix.training.loop.Trainer`.
    """
    from helix.training.loop import Trainer

    configs = fold_configs(cfg, folds)
    summaries = []
    is_main = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 writes
    for fold_cfg in configs:
        done = _finished_summary(fold_cfg)
        if skip_finished and done is not None:
            if verbose:
                print(f"{fold_cfg.out_dir}: already finished, reusing its summary", flush=True)
            summaries.append(done)
            continue
        if verbose and len(configs) > 1:
            print(f"== {fold_cfg.model.name} on {fold_cfg.data.name}, fold {fold_cfg.data.fold}"
                  f"/{fold_cfg.data.num_folds} -> {fold_cfg.out_dir}", flush=True)
        summaries.append(Trainer(fold_cfg, resume=resume, verbose=verbose, allow_changes=allow_changes).fit())
    metric = summaries[0].get("metric", "acc") if summaries else "acc"
    result = {"runs": summaries, "metric": metric}
    for key in _keys(metric):
        result[key + "_mean"], result[key + "_std"] = mean_std(s.get(key) for s in summaries)
    if len(configs) > 1 and is_main:
        Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
        (Path(cfg.out_dir) / "kfold_summary.json").write_text(json.dumps(result, indent=2) + "\n")
        if verbose:
            print(kfold_table(result))
    return result


def _keys(metric: str) -> tuple[str, str, str]:
    """The three test figures of a run's summary: accuracy, or mAP for a multi-label run."""
    return f"final_test_{metric}", f"test_{metric}_at_best_val", f"best_test_{metric}"


def kfold_table(result: dict) -> str:
    n, metric = len(result["runs"]), result.get("metric", "acc")
    lines = [f"{METRIC_NAMES.get(metric, metric)} over {n} folds (mean +- std, ddof=1):"]
    for key, name in zip(_keys(metric), ("final test", "test @ best val", PAPER_PROTOCOL_LABEL)):
        lines.append(f"  {name:<28} {format_pct(result[key + '_mean'], result[key + '_std'], n)}")
    return "\n".join(lines)


def _finished_summary(cfg: TrainConfig) -> dict | None:
    path = Path(cfg.out_dir) / "summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    return summary if summary.get("epochs_completed", 0) >= cfg.optim.epochs else None
