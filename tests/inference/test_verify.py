"""Speaker verification: trial parsing, EER and minDCF against a brute-force definition, end to end."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from helix.inference.predict import load_predictor
from helix.inference.verify import (compute_eer, compute_min_dcf, cosine_scores, read_trials, score_trials,
                                     verification_metrics)
from helix.models import create_model
from helix.models.checkpoint import save_checkpoint


def brute_force(scores, labels, p=0.01):
    """Miss / false-alarm rates at every candidate threshold, straight from the definitions."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    rows = []
    for t in list(np.unique(scores)) + [np.inf]:
        p_miss = np.mean(scores[labels] < t)
        p_fa = np.mean(scores[~labels] >= t)
        rows.append((p_miss, p_fa))
    rows = np.array(rows)
    dcf = (rows[:, 0] * p + rows[:, 1] * (1 - p)).min() / min(p, 1 - p)
    return rows, dcf


@pytest.mark.parametrize("seed", range(4))
def test_eer_and_min_dcf_match_definitions(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(301) < 0.3
    scores = np.round(rng.normal(labels * 1.5, 1.0), 1)  # rounding makes ties
    rows, dcf = brute_force(scores, labels)
    eer, _ = compute_eer(scores, labels)
    # the EER lies between the two error rates where they cross
    i = int(np.argmax(rows[:, 0] >= rows[:, 1]))
    lo, hi = sorted([rows[i - 1, 0], rows[i, 0]])
    assert lo - 1e-12 <= eer <= hi + 1e-12
    assert compute_min_dcf(scores, labels)[0] == pytest.approx(dcf)


def test_metric_edge_cases():
    labels = np.array([1, 1, 0, 0])
    assert compute_eer(np.array([0.9, 0.8, 0.1, 0.2]), labels)[0] == 0.0
    assert compute_eer(np.array([0.1, 0.2, 0.9, 0.8]), labels)[0] == 1.0
    assert compute_eer(np.array([0.9, 0.2, 0.8, 0.1]), labels)[0] == pytest.approx(0.5)
    assert compute_min_dcf(np.zeros(4), labels)[0] == pytest.approx(1.0)  # no better than always rejecting
    m = verification_metrics(np.array([0.9, 0.8, 0.1, 0.2]), labels)
    assert (m["p_target"], m["c_miss"], m["c_fa"], m["min_dcf"]) == (0.01, 1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="both target and non-target"):
        compute_eer(np.ones(3), np.ones(3))
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(cosine_scores(a, np.array([[2.0, 0.0], [-1.0, -1.0], [1.0, 0.0]])), [1, -1, 0])


def test_read_trials(tmp_path):
    (tmp_path / "t.txt").write_text("1 id1/a.wav id1/b.wav\n\n0 id1/a.wav id2/c.wav\n")
    trials = read_trials(tmp_path / "t.txt")
    assert [(t.label, t.enroll, t.test) for t in trials] == [(1, "id1/a.wav", "id1/b.wav"), (0, "id1/a.wav", "id2/c.wav")]
    (tmp_path / "bad.txt").write_text("1 a.wav b.wav\nyes a.wav b.wav\n")
    with pytest.raises(ValueError, match="bad.txt:2"):
        read_trials(tmp_path / "bad.txt")


def test_score_trials_end_to_end(tmp_path):
    torch.manual_seed(0)
    kwargs = {"d_model": 16, "d_state": 8, "pattern": "MA", "n_heads": 2}
    model = create_model("helix_raw", 3, **kwargs)
    save_checkpoint(tmp_path / "spk.pt", {"model": {"name": "helix_raw", "kwargs": kwargs, "num_classes": 3},
                                          "class_names": ["a", "b", "c"], "sample_rate": 16000,
                                          "clip_seconds": 0.5, "model_state": model.state_dict()})
    rng = np.random.default_rng(0)
    for spk in ("s1", "s2"):
        (tmp_path / spk).mkdir()
        for utt in range(2):
            sf.write(tmp_path / spk / f"{utt}.wav", 0.1 * rng.standard_normal(9000).astype(np.float32), 16000)
    (tmp_path / "s2" / "broken.wav").write_bytes(b"garbage" * 100)
    trials = read_trials_text(tmp_path, ["1 s1/0.wav s1/0.wav", "1 s1/0.wav s1/1.wav", "0 s1/0.wav s2/0.wav",
                                         "0 s1/1.wav s2/broken.wav"])
    scores, labels, kept, failures = score_trials(load_predictor(tmp_path / "spk.pt"), trials, tmp_path)
    assert len(kept) == 3 and len(failures) == 1 and "broken.wav" in str(failures[0].error)
    assert scores[0] == pytest.approx(1.0, abs=1e-5)  # a file against itself
    assert list(labels) == [1, 1, 0] and np.all(np.abs(scores) <= 1 + 1e-6)


def read_trials_text(folder, lines):
    (folder / "trials.txt").write_text("\n".join(lines) + "\n")
    return read_trials(folder / "trials.txt")
