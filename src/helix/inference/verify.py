"""Speaker verification on trial lists: cosine scoring of pooled embeddings, EER and minDCF.

Trial lists follow VoxCeleb's: one trial per line, ``label enroll_path test_path`` with label 1
(same speaker, "target") or 0 (different speakers); paths are relative to an audio root. Each file is
embedded once (:mod:`helix.inference.embed`: mean of window embeddings) and a trial's score is the
cosine similarity of its two embeddings.

Metrics, over all trials:
- EER: the error rate where the miss rate (targets scored below the threshold) equals the false-alarm
  rate (non-targets at or above it), linearly interpolated between the two thresholds that bracket
  the crossing.
- minDCF: min over thresholds of ``C_miss * P_miss * p_target + C_fa * P_fa * (1 - p_target)``,
  normalised by ``min(C_miss * p_target, C_fa * (1 - p_target))`` (the cost of always accepting or
  always rejecting), with **p_target = 0.01, C_miss = C_fa = 1** (the VoxCeleb challenge setting).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

P_TARGET, C_MISS, C_FA = 0.01, 1.0, 1.0


@dataclass(frozen=True)
class Trial:
    label: int
    """1 = same speaker (target), 0 = different speakers."""
    enroll: str
    test: str


def read_trials(path: str | os.PathLike) -> list[Trial]:
    """Parse a trial list; raises ValueError naming the file and line for a malformed line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ValueError(f"trial list not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read trial list {path}: {err}") from None
    trials = []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) != 3 or parts[0] not in ("0", "1"):
            raise ValueError(f"{path}:{n}: expected 'label enroll_path test_path' with label 0 or 1, "
                             f"got {line.strip()!r}")
        trials.append(Trial(int(parts[0]), parts[1], parts[2]))
    if not trials:
        raise ValueError(f"trial list {path} holds no trials")
    return trials


def cosine_scores(enroll: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of (n, D) and (n, D) -> (n,); a zero vector scores 0."""
    a = enroll / np.maximum(np.linalg.norm(enroll, axis=-1, keepdims=True), 1e-12)
    b = test / np.maximum(np.linalg.norm(test, axis=-1, keepdims=True), 1e-12)
    return np.sum(a * b, axis=-1)


def error_rates(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Miss and false-alarm rates at every distinct threshold (accept when score >= threshold).

    Returns (thresholds (K+1,), p_miss (K+1,), p_fa (K+1,)), thresholds ascending with +inf last
    (reject everything), so p_miss rises from 0 to 1 and p_fa falls from 1 to 0.
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    n_tgt, n_non = int(labels.sum()), int((~labels).sum())
    if n_tgt == 0 or n_non == 0:
        raise ValueError(f"need both target and non-target trials, got {n_tgt} target and {n_non} non-target")
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], labels[order]
    thresholds, first = np.unique(s, return_index=True)
    # trials below threshold thresholds[i] are exactly the first `first[i]` in sorted order
    tgt_below = np.concatenate([[0], np.cumsum(y)])[first]
    non_below = np.concatenate([[0], np.cumsum(~y)])[first]
    thresholds = np.append(thresholds, np.inf)
    p_miss = np.append(tgt_below, n_tgt) / n_tgt
    p_fa = 1.0 - np.append(non_below, n_non) / n_non
    return thresholds, p_miss, p_fa


def compute_eer(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(EER, threshold) with the miss/false-alarm crossing linearly interpolated."""
    thr, p_miss, p_fa = error_rates(scores, labels)
    diff = p_miss - p_fa  # rises from -1 to +1
    i = int(np.argmax(diff >= 0))  # first point at or past the crossing
    if i == 0 or diff[i] == 0:
        return float(p_miss[i]), float(thr[i])
    # interpolate between points i-1 (diff < 0) and i (diff > 0)
    w = -diff[i - 1] / (diff[i] - diff[i - 1])
    eer = p_miss[i - 1] + w * (p_miss[i] - p_miss[i - 1])
    t = thr[i - 1] if not np.isfinite(thr[i]) else thr[i - 1] + w * (thr[i] - thr[i - 1])
    return float(eer), float(t)


def compute_min_dcf(scores: np.ndarray, labels: np.ndarray, p_target: float = P_TARGET,
                    c_miss: float = C_MISS, c_fa: float = C_FA) -> tuple[float, float]:
    """(normalised minDCF, threshold at the minimum)."""
    thr, p_miss, p_fa = error_rates(scores, labels)
    dcf = c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target)
    i = int(np.argmin(dcf))
    return float(dcf[i] / min(c_miss * p_target, c_fa * (1 - p_target))), float(thr[i])


def verification_metrics(scores: np.ndarray, labels: np.ndarray) -> dict:
    """EER and minDCF (p_target 0.01, C_miss = C_fa = 1) with the trial counts."""
    eer, eer_thr = compute_eer(scores, labels)
    min_dcf, dcf_thr = compute_min_dcf(scores, labels)
    labels = np.asarray(labels).astype(bool)
    return {"trials": int(labels.size), "targets": int(labels.sum()), "nontargets": int((~labels).sum()),
            "eer": eer, "eer_threshold": eer_thr, "min_dcf": min_dcf, "min_dcf_threshold": dcf_thr,
            "p_target": P_TARGET, "c_miss": C_MISS, "c_fa": C_FA}


def score_trials(predictor, trials: list[Trial], root: str | os.PathLike, *, window_seconds=None,
                 hop_seconds=None, progress=None) -> tuple[np.ndarray, np.ndarray, list[Trial], list]:
    """Embed every distinct file once and cosine-score the trials whose two files both embedded.

    Returns (scores (n,), labels (n,), scored trials, failures); trials touching a failed file
    are left out of the scores (the failures list says which files).
    """
    from helix.inference.embed import embed_many
    from helix.inference.predict import Failure

    root = Path(root)
    files = list(dict.fromkeys(p for t in trials for p in (t.enroll, t.test)))
    vectors, failures = {}, []
    for rel, res in zip(files, embed_many(predictor, [root / f for f in files], window_seconds=window_seconds,
                                          hop_seconds=hop_seconds, progress=progress)):
        if isinstance(res, Failure):
            failures.append(res)
        else:
            vectors[rel] = res.vector
    kept = [t for t in trials if t.enroll in vectors and t.test in vectors]
    if not kept:
        return np.zeros(0), np.zeros(0, dtype=np.int64), kept, failures
    enroll = np.stack([vectors[t.enroll] for t in kept])  # (n, D)
    test = np.stack([vectors[t.test] for t in kept])  # (n, D)
    return cosine_scores(enroll, test), np.array([t.label for t in kept]), kept, failures
