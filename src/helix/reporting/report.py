"""Results tables from finished (or interrupted) run folders: Markdown + CSV, mean +- std over folds.

A run folder is any folder holding ``metrics.jsonl`` (see ``helix.core.rundir``); runs of the
same dataset, model and model options are one row, their folds aggregated. ``helix report`` and
``helix grid`` both end here.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import yaml

from helix.core.metrics import (METRIC_NAMES, PAPER_PROTOCOL_LABEL, format_pct, format_table, mean_std, run_summary_table,  # noqa: F401
                                summarize_history)
from helix.core.rundir import read_jsonl
from helix.names import BACKBONE_LABELS, split_model_name

# the three accuracies every run reports: (summary key, column title)
ACCURACIES = (("final_test_acc", "Final test"),
              ("test_acc_at_best_val", "Test @ best val"),
              ("best_test_acc", PAPER_PROTOCOL_LABEL.capitalize()))


def find_run_dirs(paths: list[str | Path]) -> list[Path]:
    """Every folder at or below ``paths`` that holds ``metrics.jsonl``."""
    found = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"no such run folder: {p}")
        found += sorted(m.parent for m in p.rglob("metrics.jsonl"))
    return sorted(set(found))


def load_run(run_dir: str | Path) -> dict:
    """``{"dir", "config", "history", "summary", "complete"}``; the summary is rebuilt from the
    per-epoch records when a run never finished."""
    run_dir = Path(run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else {}
    history = read_jsonl(run_dir / "metrics.jsonl")
    if not history:
        raise ValueError(f"{run_dir} has no completed epochs")
    summary_path = run_dir / "summary.json"
    metric = "map" if any("val_map" in rec for rec in history) else "acc"  # multi-label runs select on mAP
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else summarize_history(history, metric)
    summary.setdefault("model", config.get("model", {}).get("name", run_dir.name))
    summary.setdefault("dataset", config.get("data", {}).get("name", "?"))
    summary.setdefault("fold", config.get("data", {}).get("fold"))
    summary.setdefault("epochs_planned", config.get("optim", {}).get("epochs"))
    return {"dir": run_dir, "config": config, "history": history, "summary": summary,
            "complete": summary_path.is_file()}


def _group_key(run: dict) -> tuple:
    model = run["config"].get("model", {})
    options = json.dumps({k: model.get(k) for k in ("num_layers", "pool_first_k", "overrides")}, sort_keys=True)
    return run["summary"]["dataset"], run["summary"]["model"], options, _metric(run)


def aggregate_runs(runs: list[dict]) -> list[dict]:
    """One row per (dataset, model, model options): mean and std of each accuracy over its runs
    (of mAP for multi-label runs: the row's ``metric`` is ``"map"``, its columns keep the accuracy names)."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault(_group_key(run), []).append(run)
    rows = []
    for (dataset, model, _, metric), members in groups.items():
        backbone, frontend = split_model_name(model)
        sums = [m["summary"] for m in members]
        row = {"dataset": dataset, "model": model, "backbone": backbone, "frontend": frontend,
               "runs": len(members), "folds": [s.get("fold") for s in sums],
               "epochs": min(s["epochs_completed"] for s in sums),
               "epochs_planned": max((s.get("epochs_planned") or 0) for s in sums),
               "params": sums[0].get("params"), "chance_acc": sums[0].get("chance_acc"), "metric": metric,
               "complete": all(m["complete"] for m in members),
               "dirs": [str(m["dir"]) for m in members]}
        for key, _ in ACCURACIES:
            row[key + "_mean"], row[key + "_std"] = mean_std(s.get(key.replace("acc", metric)) for s in sums)
        rows.append(row)
    order = list(BACKBONE_LABELS)
    rows.sort(key=lambda r: (r["dataset"], r["frontend"],
                             order.index(r["backbone"]) if r["backbone"] in order else len(order), r["model"]))
    return rows


def results_markdown(rows: list[dict]) -> str:
    headers = (["Dataset", "Model", "Frontend", "Runs", "Epochs", "Params", "Metric"] + [t for _, t in ACCURACIES]
               + ["Chance"])
    body = []
    for r in rows:
        epochs = f"{r['epochs']}" + ("" if r["epochs"] >= r["epochs_planned"] else f"/{r['epochs_planned']}")
        body.append([r["dataset"], BACKBONE_LABELS.get(r["backbone"], r["backbone"]), r["frontend"], r["runs"],
                     epochs, f"{r['params'] / 1e6:.2f}M" if r["params"] else "-",
                     METRIC_NAMES.get(r.get("metric", "acc"), "accuracy")]
                    + [format_pct(r[k + "_mean"], r[k + "_std"], r["runs"]) for k, _ in ACCURACIES]
                    + [format_pct(r["chance_acc"])])
    note = ("Accuracies (mAP for multi-label runs) in %, mean +- sample std (ddof=1) over runs/folds. "
            "\"Test @ best val\" is the honest "
            "figure (validation picks the epoch); \"best test (paper protocol)\" lets the test set pick it, "
            "as the paper's tables do, and is optimistic.")
    return format_table(headers, body, markdown=True) + "\n\n" + note + "\n"


def write_results(rows: list[dict], out_dir: str | Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, csv_path = out_dir / "results.md", out_dir / "results.csv"
    md.write_text(results_markdown(rows))
    fields = ["dataset", "model", "backbone", "frontend", "runs", "epochs", "epochs_planned", "params",
              "chance_acc", "metric"] + [k + s for k, _ in ACCURACIES for s in ("_mean", "_std")]
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if isinstance(r.get(k), float) and math.isnan(r[k]) else r.get(k)) for k in fields})
    return {"markdown": md, "csv": csv_path}


def per_class_markdown(runs: list[dict]) -> str:
    """Per-class test accuracy and F1 at the best validation epoch of every single-label run that
    wrote them (``per_class.csv`` and ``confusion_matrix.png`` in its folder); "" when none did."""
    parts = []
    for run in runs:
        path = Path(run["dir"]) / "per_class.csv"
        if not path.is_file():
            continue
        with open(path, newline="") as f:
            body = [[r["class"], r["support"], format_pct(float(r["accuracy"])), format_pct(float(r["f1"]))]
                    for r in csv.DictReader(f)]
        parts.append(f"### {run['dir']}\n\n" + format_table(["class", "test clips", "accuracy", "F1"], body, markdown=True)
                     + f"\n\nConfusion matrix: `{Path(run['dir']) / 'confusion_matrix.png'}`\n")
    return "\n## Per class (test set, best validation epoch, %)\n\n" + "\n".join(parts) if parts else ""


def build_report(run_paths: list[str | Path], out_dir: str | Path, plots: bool = True) -> dict[str, Path]:
    """Find runs under ``run_paths``, write results.md/.csv and (optionally) the figures to ``out_dir``."""
    dirs = find_run_dirs(run_paths)
    if not dirs:
        raise FileNotFoundError(f"no run folders (with metrics.jsonl) under {', '.join(map(str, run_paths))}")
    runs = [load_run(d) for d in dirs]
    rows = aggregate_runs(runs)
    written = write_results(rows, out_dir)
    per_class = per_class_markdown(runs)
    if per_class:
        with open(written["markdown"], "a") as f:
            f.write(per_class)
    if plots:
        from helix.reporting.plots import plot_accuracy_bars, plot_training_curves

        # one figure per dataset and metric: a multi-label run plots mAP, a single-label one accuracy
        # (a dataset name such as "csv" can hold both); the file names stay accuracy*.png, curves*.png
        datasets = sorted({r["dataset"] for r in rows})
        for dataset in datasets:
            metrics = sorted({r["metric"] for r in rows if r["dataset"] == dataset})
            for metric in metrics:
                suffix = (f"_{dataset}" if len(datasets) > 1 else "") + (f"_{metric}" if len(metrics) > 1 else "")
                written[f"bars{suffix}"] = plot_accuracy_bars(
                    [r for r in rows if r["dataset"] == dataset and r["metric"] == metric],
                    Path(out_dir) / f"accuracy{suffix}.png", title=dataset)
                written[f"curves{suffix}"] = plot_training_curves(
                    [r for r in runs if r["summary"]["dataset"] == dataset and _metric(r) == metric],
                    Path(out_dir) / f"curves{suffix}.png", title=dataset)
    return written


def _metric(run: dict) -> str:
    """``"map"`` for a multi-label run, ``"acc"`` otherwise (as its summary, or its records, say)."""
    return run["summary"].get("metric", "acc")
