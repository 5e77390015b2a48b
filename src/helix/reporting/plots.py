"""Figures in the paper's style (PNG, matplotlib's file-only Agg backend).

- :func:`plot_accuracy_bars`: backbones on the x axis, one bar per frontend (raw solid, mel
  hatched), error bars +-1 std over folds, epoch counts above the bars (Figures 2-3).
- :func:`plot_training_curves`: accuracy per epoch, one panel per frontend, a 7-epoch moving
  average over the raw values drawn faintly, dotted lines at each run's best (Figures 4-7).

Multi-label runs (tagging) select and report on mAP instead of accuracy (their rows and summaries
say ``metric: map``): their bars show mAP and their curves the per-epoch ``test_map``, with axes
labelled so. One figure holds runs of one metric; ``bars_figure`` and ``curves_figure`` build the
figures without writing them.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display needed; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

from helix.core.metrics import METRIC_NAMES  # noqa: E402
from helix.names import BACKBONE_LABELS, split_model_name  # noqa: E402

COLORS = {"pure_mamba": "#1f77b4", "helix": "#d62728", "pure_attention": "#2ca02c"}


def _label(backbone: str) -> str:
    return BACKBONE_LABELS.get(backbone, backbone)


def moving_average(values, window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values (shorter at the start, so no epochs are lost)."""
    v = np.asarray(values, dtype=float)
    if window <= 1 or len(v) == 0:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def one_metric(metrics) -> str:
    """The one task metric (``"acc"`` or ``"map"``) of a figure's runs; ValueError when they mix."""
    found = set(metrics) or {"acc"}
    if len(found) > 1:
        raise ValueError(f"one figure cannot mix metrics {sorted(found)}: plot accuracy and mAP runs apart")
    return found.pop()


def bar_axis_label(column: str, metric: str = "acc") -> str:
    """The y label of a bar chart of ``column`` (an ``aggregate_runs`` column, named after accuracy
    even when the row holds mAP) for runs measured by ``metric``."""
    name = "acc." if metric == "acc" else METRIC_NAMES.get(metric, metric)
    names = {"best_test_acc": f"best test {name} (paper protocol) %", "test_acc_at_best_val": f"test {name} @ best val %",
             "final_test_acc": f"final test {name} %"}
    return names.get(column, column)


def curve_axis_label(key: str) -> str:
    """``test_acc`` -> ``test accuracy (%)``, ``test_map`` -> ``test mAP (%)``."""
    prefix, _, metric = key.rpartition("_")
    return f"{prefix.replace('_', ' ')} {METRIC_NAMES.get(metric, metric)} (%)".strip()


def plot_accuracy_bars(rows: list[dict], path: str | Path, metric: str = "best_test_acc",
                       title: str = "") -> Path:
    """Grouped bars of ``metric`` (mean over runs, +-1 std) from ``aggregate_runs`` rows, written to
    ``path``; mAP for multi-label rows (see :func:`bars_figure`)."""
    return _save(bars_figure(rows, metric, title), path)


def bars_figure(rows: list[dict], metric: str = "best_test_acc", title: str = ""):
    """The figure of :func:`plot_accuracy_bars`: ``rows[i][metric + "_mean"]`` is accuracy, or mAP
    where the rows' ``metric`` is ``"map"`` (then there is no chance line)."""
    task_metric = one_metric(r.get("metric", "acc") for r in rows)
    backbones = list(dict.fromkeys(r["backbone"] for r in rows))
    frontends = [f for f in ("raw", "mel", "-") if any(r["frontend"] == f for r in rows)]
    width = 0.8 / max(len(frontends), 1)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(backbones), 3.6))
    for j, frontend in enumerate(frontends):
        for i, backbone in enumerate(backbones):
            row = next((r for r in rows if r["backbone"] == backbone and r["frontend"] == frontend), None)
            if row is None or not np.isfinite(row[metric + "_mean"]):
                continue
            x = i + (j - (len(frontends) - 1) / 2) * width
            mean, std = 100 * row[metric + "_mean"], 100 * row[metric + "_std"]
            ax.bar(x, mean, width * 0.95, color=COLORS.get(backbone, "#7f7f7f"),
                   hatch="//" if frontend == "mel" else None, edgecolor="black", linewidth=0.6,
                   yerr=std if row["runs"] > 1 else None, capsize=3,
                   label=frontend if i == 0 else None)
            epochs = f"{row['epochs']} ep" if row["epochs"] < row["epochs_planned"] else f"{mean:.1f}"
            ax.text(x, mean + (std if row["runs"] > 1 else 0) + 0.8, epochs, ha="center", va="bottom", fontsize=7)
    chance = next((r["chance_acc"] for r in rows if r.get("chance_acc")), None)
    if chance and task_metric == "acc":
        ax.axhline(100 * chance, color="gray", linestyle=":", linewidth=1, label="chance")
    ax.set_xticks(range(len(backbones)), [_label(b) for b in backbones])
    ax.set_ylabel(bar_axis_label(metric, task_metric))
    n_runs = max((r["runs"] for r in rows), default=1)
    ax.set_title(title + (f" (+-1 std over {n_runs} folds)" if n_runs > 1 else ""), fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    ax.set_ylim(0, min(105, max([100 * r[metric + "_mean"] for r in rows if np.isfinite(r[metric + "_mean"])]
                                + [10]) * 1.15 + 5))
    fig.tight_layout()
    return fig


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def plot_training_curves(runs: list[dict], path: str | Path, metric: str | None = None, smooth: int = 7,
                         title: str = "") -> Path:
    """Per-epoch ``metric`` of each model (its lowest fold, as the paper's Figure 4 shows fold 1),
    smoothed over up to ``smooth`` epochs (at most a tenth of the run), written to ``path``.
    ``metric=None``: ``test_acc``, or ``test_map`` for multi-label runs."""
    return _save(curves_figure(runs, metric, smooth, title), path)


def curves_figure(runs: list[dict], metric: str | None = None, smooth: int = 7, title: str = ""):
    """The figure of :func:`plot_training_curves` (``runs`` as ``load_run`` returns them)."""
    if metric is None:
        metric = "test_" + one_metric(r["summary"].get("metric", "acc") for r in runs)
    chosen: dict[str, dict] = {}
    for run in sorted(runs, key=lambda r: (r["summary"].get("fold") or 0)):
        chosen.setdefault(run["summary"]["model"], run)
    order = list(BACKBONE_LABELS)
    chosen = dict(sorted(chosen.items(), key=lambda kv: order.index(split_model_name(kv[0])[0])
                         if split_model_name(kv[0])[0] in order else len(order)))
    frontends = [f for f in ("raw", "mel", "-") if any(split_model_name(m)[1] == f for m in chosen)]
    # a 7-epoch window suits the paper's 100 epochs; short runs get a proportionally shorter one
    longest = max((len(r["history"]) for r in chosen.values()), default=1)
    smooth = min(smooth, max(1, longest // 10))
    fig, axes = plt.subplots(1, len(frontends), figsize=(4.6 * len(frontends), 3.4), squeeze=False, sharey=True)
    for ax, frontend in zip(axes[0], frontends):
        for model, run in chosen.items():
            backbone, fe = split_model_name(model)
            if fe != frontend:
                continue
            epochs = [r["epoch"] for r in run["history"]]
            values = 100 * np.array([r.get(metric, np.nan) for r in run["history"]], dtype=float)
            color = COLORS.get(backbone)
            ax.plot(epochs, values, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(epochs, moving_average(values, smooth), color=color, linewidth=1.6, label=_label(backbone))
            if np.isfinite(values).any():
                ax.axhline(np.nanmax(values), color=color, linestyle=":", linewidth=0.8)
        ax.set_title(f"{title} {frontend}".strip(), fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
    axes[0][0].set_ylabel(curve_axis_label(metric))
    note = f"{smooth}-epoch moving average, per-epoch values faint" if smooth > 1 else "per epoch"
    fig.suptitle(f"{note}; dotted: best", fontsize=8, y=0.02, va="bottom")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig
