"""Accuracy bookkeeping and the three numbers every run reports.

- final test accuracy: the model after the last epoch;
- test accuracy at the best-validation epoch: honest model selection;
- best test accuracy over epochs, labelled "best test (paper protocol)": the paper's figure, where
  the test set picks the epoch, so it is optimistic.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch

PAPER_PROTOCOL_LABEL = "best test (paper protocol)"


METRIC_NAMES = {"acc": "accuracy", "map": "mAP"}
"""The metric that selects and reports a run, by its key in the epoch records (``val_<key>``):
accuracy for single-label tasks, mean average precision for multi-label ones."""


def task_metric(multilabel: bool) -> str:
    """``"map"`` for multi-label tasks, ``"acc"`` otherwise."""
    return "map" if multilabel else "acc"


def count_correct(logits: torch.Tensor, labels: torch.Tensor) -> int:
    """logits (B, C), labels (B,) -> number of top-1 hits."""
    return int((logits.argmax(dim=-1) == labels).sum())


def top1_hits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Items whose highest-scoring class is one of theirs (a 0-dim tensor, no host sync): top-1
    accuracy for class indices (B,), top-1 precision for 0/1 label vectors (B, C)."""
    top = logits.argmax(-1)
    if labels.ndim == 2:
        return (labels.gather(1, top[:, None]).squeeze(1) > 0.5).sum()
    return (top == labels).sum()


def best_val_index(history: Sequence[dict], metric: str = "acc") -> int | None:
    """Epoch record with the highest validation ``metric`` (``val_acc``, or ``val_map`` for a
    multi-label run); ties go to the lower validation loss, then to the earlier epoch. None when no
    record has validation metrics."""
    best, best_key = None, None
    for i, rec in enumerate(history):
        acc = rec.get(f"val_{metric}")
        if acc is None or not math.isfinite(acc):
            continue
        loss = rec.get("val_loss")
        key = (acc, -(loss if loss is not None and math.isfinite(loss) else math.inf))
        if best_key is None or key > best_key:
            best, best_key = i, key
    return best


def summarize_history(history: Sequence[dict], metric: str = "acc") -> dict:
    """Per-epoch records (``epoch``, ``val_<metric>``, ``val_loss``, ``test_<metric>``) -> the run's
    summary: ``final_test_<metric>``, ``test_<metric>_at_best_val``, ``best_test_<metric>`` and
    their epochs (``metric`` ``"acc"`` gives the accuracy keys every report reads)."""
    if not history:
        raise ValueError("no completed epochs to summarize")
    last, val, test = history[-1], f"val_{metric}", f"test_{metric}"
    out = {
        "metric": metric,
        "epochs_completed": len(history),
        "final_epoch": last["epoch"],
        f"final_val_{metric}": last.get(val),
        f"final_test_{metric}": last.get(test),
    }
    i = best_val_index(history, metric)
    out["best_val_epoch"] = history[i]["epoch"] if i is not None else None
    out[f"best_val_{metric}"] = history[i][val] if i is not None else None
    out[f"test_{metric}_at_best_val"] = history[i].get(test) if i is not None else None
    tests = [(rec[test], rec["epoch"]) for rec in history if rec.get(test) is not None]
    if tests:
        # max over epochs; the earliest epoch wins a tie
        best = max(t[0] for t in tests)
        out[f"best_test_{metric}"] = best
        out["best_test_epoch"] = min(e for a, e in tests if a == best)
    else:
        out[f"best_test_{metric}"] = out["best_test_epoch"] = None
    return out


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) of finite values."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return math.nan, math.nan
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
    return mean, math.sqrt(var)


def format_pct(value: float | None, std: float | None = None, n: int | None = None) -> str:
    """0.5510 -> "55.10"; with a std, "55.10 +- 3.33"; None/NaN -> "-"."""
    if value is None or not math.isfinite(value):
        return "-"
    text = f"{100 * value:.2f}"
    if std is not None and n is not None and n > 1:
        text += f" +- {100 * std:.2f}"
    return text


def format_table(headers: list[str], rows: list[list], markdown: bool = False) -> str:
    """Aligned plain-text table, or a Markdown one."""
    cells = [[str(c) for c in r] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*headers), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in cells])


def run_summary_table(summary: dict) -> str:
    """The end-of-run table: the three test figures (accuracy, or mAP for a multi-label run) with
    their epochs, and chance level (accuracy only)."""
    m = summary.get("metric", "acc")
    rows = [
        ["final epoch", summary["final_epoch"], format_pct(summary[f"final_test_{m}"])],
        ["best validation epoch", summary["best_val_epoch"], format_pct(summary[f"test_{m}_at_best_val"])],
        [PAPER_PROTOCOL_LABEL, summary["best_test_epoch"], format_pct(summary[f"best_test_{m}"])],
    ]
    if m == "acc":
        rows.append(["chance level", "-", format_pct(summary.get("chance_acc"))])
    title = (f"{summary.get('model', '?')} on {summary.get('dataset', '?')}"
             + (f" fold {summary['fold']}" if summary.get("fold") else "")
             + f": {summary['epochs_completed']}/{summary.get('epochs_planned', '?')} epochs")
    name = METRIC_NAMES.get(m, m)
    return title + "\n" + format_table([f"test {name} (%) at", "epoch", name], rows)
