"""The frozen-feature route: a linear probe on a checkpoint's pooled embeddings.

Every clip of a prepared manifest's train, validation and test parts is embedded with the frozen
checkpoint (the vector :func:`helix.inference.embed.embed_many` gives: the mean over windows of
the pooled features, (D,)); a logistic regression (scikit-learn) is fitted on the standardised
training embeddings for each inverse regularisation strength ``C`` of a small grid; validation
alone picks ``C`` (single-label: accuracy; multi-label: mAP, one binary classifier per class); the
test part is scored once, with that ``C``.

Parts, as training draws them (:func:`helix.data.tasks.build_task`): the manifest's ``split``
column (``train``/``validation``/``test``), or, for fold corpora (ESC-50, UrbanSound8K, a CSV with
folds), test = fold K (default: the first), validation = the next fold cyclically, training = the
rest. Rows without a label (Speech Commands' background noise) are left out.

The probe is saved without pickle as safetensors (:func:`save_probe`): ``weight`` (C, D), ``bias``
(C,), ``mean`` (D,), ``scale`` (D,), float32, with logits = ((x - mean) / scale) @ weight.T + bias
(softmax over classes, or one sigmoid per class when the metadata says ``multilabel``).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from helix.data.labels import is_multilabel, label_matrix, split_label
from helix.data.manifest import class_names as manifest_classes
from helix.inference.embed import embed_many
from helix.inference.predict import Failure, Predictor
from helix.utils.io import atomic_write

__all__ = ["DEFAULT_GRID", "LinearProbe", "ProbeFit", "SPLITS", "embed_parts", "fit_probe", "load_probe",
           "probe_manifest", "probe_parts", "save_probe", "score"]

SPLITS = ("train", "validation", "test")
DEFAULT_GRID = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)
"""Inverse regularisation strengths tried, on standardised features (1 is scikit-learn's default)."""
_ABSENT_BIAS = -30.0
"""Logit of a class the training part never shows: it is never predicted (sigmoid ~ 1e-13)."""


def probe_parts(rows: Sequence[dict[str, Any]], fold: int | None = None,
                where: str = "the manifest") -> tuple[dict[str, list[dict]], list[str], bool]:
    """``({"train", "validation", "test"}: rows, class_names, multilabel)`` of manifest ``rows``.

    ValueError (naming ``where``) for an empty part, a fold that does not exist, or ``fold`` given
    for a manifest without folds.
    """
    rows = [r for r in rows if split_label(r["label"])]
    if not rows:
        raise ValueError(f"{where} holds no labelled clips")
    names = manifest_classes(rows)
    folds = sorted({r["fold"] for r in rows if r["fold"]})
    if folds:
        # the rule of helix.data.tasks (_kfold): validation is the fold after the test fold
        fold = folds[0] if fold is None else fold
        if fold not in folds:
            raise ValueError(f"fold {fold} is not one of the folds in {where}: {folds}")
        if len(folds) < 3:
            raise ValueError(f"{where} has folds {folds}; train/validation/test need at least 3")
        val_fold = folds[(folds.index(fold) + 1) % len(folds)]
        parts = {"train": [r for r in rows if r["fold"] not in (fold, val_fold)],
                 "validation": [r for r in rows if r["fold"] == val_fold],
                 "test": [r for r in rows if r["fold"] == fold]}
    else:
        if fold is not None:
            raise ValueError(f"{where} has one recorded split, not folds (got fold {fold})")
        parts = {s: [r for r in rows if r["split"] == s] for s in SPLITS}
    empty = [s for s in SPLITS if not parts[s]]
    if empty:
        found = sorted({r["split"] for r in rows})
        raise ValueError(f"{where}: no clips in the {' and '.join(empty)} part(s) (splits found: {found}); "
                         "a probe needs train, validation and test splits, or folds")
    return parts, names, is_multilabel(rows)


def targets_of(rows: Sequence[dict[str, Any]], names: Sequence[str], multilabel: bool) -> np.ndarray:
    """(N,) int64 class indices, or (N, C) float32 0/1 for multi-label rows."""
    if multilabel:
        return label_matrix(rows, names)
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[r["label"]] for r in rows], dtype=np.int64)


@dataclass
class EmbeddedPart:
    """One part's embeddings: ``x`` (N, D) float32 and the rows they came from (failed clips left out)."""

    x: np.ndarray
    rows: list[dict]


def embed_parts(predictor: Predictor, parts: dict[str, list[dict]], *, window_seconds: float | None = None,
                hop_seconds: float | None = None, progress=None) -> tuple[dict[str, EmbeddedPart], list[Failure]]:
    """Embed every clip of every part in one pass (windows batch across clips and parts); clips that
    fail are left out and returned as :class:`Failure` (each names its file)."""
    order = [(s, r) for s in SPLITS for r in parts[s]]
    vectors: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    kept: dict[str, list[dict]] = {s: [] for s in SPLITS}
    failures = []
    results = embed_many(predictor, [r["path"] for _, r in order], window_seconds=window_seconds,
                         hop_seconds=hop_seconds, progress=progress)
    for (split, row), res in zip(order, results):
        if isinstance(res, Failure):
            failures.append(res)
            continue
        vectors[split].append(res.vector)
        kept[split].append(row)
    dim = next((len(v[0]) for v in vectors.values() if v), 0)
    out = {s: EmbeddedPart(np.stack(vectors[s]) if vectors[s] else np.zeros((0, dim), np.float32), kept[s])
           for s in SPLITS}
    empty = [s for s in SPLITS if not out[s].rows]
    if empty:
        raise ValueError(f"every clip of the {' and '.join(empty)} part(s) failed to embed "
                         f"({len(failures)} failure(s), first: {failures[0].error if failures else '-'})")
    return out, failures


@dataclass
class LinearProbe:
    """A fitted probe: logits (N, C) = ((x - mean) / scale) @ weight.T + bias."""

    weight: np.ndarray
    """(C, D) float32."""
    bias: np.ndarray
    """(C,) float32."""
    mean: np.ndarray
    """(D,) float32: training embeddings' mean."""
    scale: np.ndarray
    """(D,) float32: training embeddings' standard deviation (1 where it is 0)."""
    class_names: list[str]
    multilabel: bool
    C: float | None = None

    def logits(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, np.float64) - self.mean) / self.scale  # (N, D)
        return z @ self.weight.T.astype(np.float64) + self.bias  # (N, C)

    def probs(self, x: np.ndarray) -> np.ndarray:
        """(N, C): softmax over classes, or per-class sigmoids for a multi-label probe."""
        logits = self.logits(x)
        if self.multilabel:
            return 1.0 / (1.0 + np.exp(-logits))
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def score(probe: LinearProbe, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """``{"metric", "value", "loss", "n"}`` (+ macro AUC and unscored classes when multi-label):
    accuracy for single-label ``y`` (N,), mAP for 0/1 ``y`` (N, C); loss is the mean log loss."""
    p = np.clip(probe.probs(x), 1e-12, 1 - 1e-12)
    if probe.multilabel:
        from helix.core.multilabel import multilabel_metrics

        m = multilabel_metrics(y, p, probe.class_names)
        loss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
        return {"metric": "map", "value": m["mAP"], "loss": loss, "n": len(y), "macro_auc": m["macro_auc"],
                "unscored": m["unscored"]}
    acc = float(np.mean(p.argmax(axis=1) == y))
    loss = float(-np.mean(np.log(p[np.arange(len(y)), y])))
    return {"metric": "acc", "value": acc, "loss": loss, "n": len(y)}


def _fit_one(z: np.ndarray, y: np.ndarray, C: float, num_classes: int, multilabel: bool):
    """(weight (C, D), bias (C,), converged) of a logistic regression on standardised ``z``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    weight = np.zeros((num_classes, z.shape[1]))
    bias = np.full(num_classes, _ABSENT_BIAS)
    converged = True

    def fit(target):
        nonlocal converged
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model = LogisticRegression(C=C, max_iter=2000).fit(z, target)
        converged &= not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        return model

    if multilabel:  # one vs rest: one binary classifier per class
        for c in range(num_classes):
            column = y[:, c]
            if column.min() == column.max():  # all one value in training: a constant score
                bias[c] = -_ABSENT_BIAS if column[0] else _ABSENT_BIAS
                continue
            model = fit(column.astype(np.int64))
            weight[c], bias[c] = model.coef_[0], model.intercept_[0]
        return weight, bias, converged
    present = np.unique(y)
    if len(present) < 2:
        raise ValueError("the training part holds a single class: nothing for a classifier to separate")
    model = fit(y)
    if len(present) == 2:
        # scikit-learn keeps one row for two classes (sigmoid); halved and mirrored it is the same
        # model as a two-row softmax: softmax([-s/2, s/2]) = sigmoid(s)
        coef = np.concatenate([-model.coef_ / 2, model.coef_ / 2])
        intercept = np.concatenate([-model.intercept_ / 2, model.intercept_ / 2])
    else:
        coef, intercept = model.coef_, model.intercept_
    weight[model.classes_], bias[model.classes_] = coef, intercept
    return weight, bias, converged


@dataclass
class ProbeFit:
    """What :func:`fit_probe` found: the probe at the chosen ``C`` and the validation score of every ``C``."""

    probe: LinearProbe
    grid: list[dict[str, Any]] = field(default_factory=list)

    @property
    def C(self) -> float:
        return self.probe.C


def fit_probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
              class_names: Sequence[str], multilabel: bool, grid: Sequence[float] = DEFAULT_GRID) -> ProbeFit:
    """Fit one probe per ``C`` in ``grid`` on the training embeddings and keep the one with the best
    validation metric (ties: lower validation log loss, then smaller ``C``). Takes no test data."""
    grid = [float(c) for c in grid]
    if not grid or any(not (c > 0 and math.isfinite(c)) for c in grid):
        raise ValueError(f"the C grid must be positive numbers, got {grid}")
    x = np.asarray(train_x, np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0  # a constant feature carries nothing; keep it finite
    z = (x - mean) / scale
    results, best, best_key = [], None, None
    for C in sorted(grid):
        weight, bias, converged = _fit_one(z, np.asarray(train_y), C, len(class_names), multilabel)
        probe = LinearProbe(weight.astype(np.float32), bias.astype(np.float32), mean.astype(np.float32),
                            scale.astype(np.float32), list(class_names), multilabel, C)
        val = score(probe, val_x, val_y)
        results.append({"C": C, "validation": val["value"], "validation_loss": val["loss"], "converged": converged})
        value = val["value"] if math.isfinite(val["value"]) else -math.inf
        key = (value, -val["loss"])  # sorted grid: a strict > keeps the smaller C on a full tie
        if best_key is None or key > best_key:
            best, best_key = probe, key
    return ProbeFit(best, results)


def save_probe(path: str | os.PathLike, probe: LinearProbe, inputs: Sequence = ()) -> Path:
    """Write the probe as safetensors (no pickle), class names and task in the metadata; atomically
    and never over one of ``inputs``."""
    from safetensors.numpy import save

    tensors = {"weight": probe.weight, "bias": probe.bias, "mean": probe.mean, "scale": probe.scale}
    meta = {"helix_probe": json.dumps({"class_names": probe.class_names, "multilabel": probe.multilabel,
                                       "C": probe.C})}
    data = save({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, metadata=meta)
    with atomic_write(path, "wb", inputs, what="probe weights") as f:
        f.write(data)
    return Path(path)


def load_probe(path: str | os.PathLike) -> LinearProbe:
    """Read a probe written by :func:`save_probe` (ValueError naming the file when it is not one)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = json.loads((f.metadata() or {})["helix_probe"])
            t = {k: f.get_tensor(k) for k in ("weight", "bias", "mean", "scale")}
    except (KeyError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a helix probe (missing {err})") from None
    except Exception as err:  # safetensors raises its own error type for a damaged header
        if isinstance(err, OSError):
            raise
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from None
    return LinearProbe(t["weight"], t["bias"], t["mean"], t["scale"], list(meta["class_names"]),
                       bool(meta["multilabel"]), meta.get("C"))


def probe_manifest(predictor: Predictor, manifest: str | os.PathLike, *, fold: int | None = None,
                   grid: Sequence[float] = DEFAULT_GRID, window_seconds: float | None = None,
                   hop_seconds: float | None = None, progress=None) -> tuple[dict[str, Any], LinearProbe, list[Failure]]:
    """Embed, fit and score a manifest's parts: ``(report, probe, failures)``.

    ``report`` is what ``probe.json`` holds: the metric, the chosen ``C``, the validation score of
    every ``C`` in ``grid``, train/validation/test scores at the chosen ``C`` (test scored once,
    here), class names, embedding size, clip counts and the clips that failed.
    """
    from helix.data.manifest import read_manifest

    parts, names, multilabel = probe_parts(read_manifest(manifest), fold, where=str(manifest))
    embedded, failures = embed_parts(predictor, parts, window_seconds=window_seconds, hop_seconds=hop_seconds,
                                     progress=progress)
    y = {s: targets_of(embedded[s].rows, names, multilabel) for s in SPLITS}
    fit = fit_probe(embedded["train"].x, y["train"], embedded["validation"].x, y["validation"], names, multilabel,
                    grid)
    scores = {s: score(fit.probe, embedded[s].x, y[s]) for s in SPLITS}
    window, hop = predictor.window(window_seconds, hop_seconds)
    sr = predictor.sample_rate
    report = {
        "checkpoint": predictor.checkpoint, "manifest": str(manifest),
        "fold": parts["test"][0]["fold"] or None,  # the test fold of a fold corpus
        "multilabel": multilabel, "metric": "map" if multilabel else "acc",
        "metric_name": "mAP" if multilabel else "accuracy", "C": fit.C, "grid": fit.grid,
        **{s: scores[s] for s in SPLITS},
        "chance_acc": None if multilabel else 1.0 / len(names),
        "class_names": names, "embedding_dim": int(embedded["train"].x.shape[1]),
        "clips": {s: len(embedded[s].rows) for s in SPLITS},
        "window_seconds": window / sr, "hop_seconds": hop / sr,
        "pooling": "mean of window embeddings", "features": "standardised with the training part's mean and std",
        "failures": [f.to_dict() for f in failures],
    }
    return _json_ready(report), fit.probe, failures


def _json_ready(value):
    """``value`` with NaN and infinities as None (strict JSON has no NaN: an unscored mAP is null)."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
