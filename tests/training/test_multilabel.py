"""Multi-label training parts: BCE on mixed label vectors, evaluation by mAP, selection on
validation mAP, sigmoid scores at inference (a real tiny model, real checkpoint files)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from helix.core.evaluate import evaluate
from helix.core.metrics import best_val_index, run_summary_table, summarize_history
from helix.core.multilabel import multilabel_metrics
from helix.inference.predict import load_predictor
from helix.models import create_model
from helix.models.checkpoint import load_model_file, model_config, save_checkpoint
from helix.models.loading import load_model, model_payload
from helix.training.mixup import mixup_batch, mixup_loss


def test_bce_on_mixed_label_vectors():
    torch.manual_seed(0)
    logits, a = torch.randn(6, 4), (torch.rand(6, 4) > 0.5).float()
    host = np.random.default_rng(3)
    wave = torch.randn(6, 100)
    mixed, ya, yb, lam = mixup_batch(wave, a, 0.4, host)
    assert ya.shape == yb.shape == (6, 4) and 0 < lam < 1
    want = F.binary_cross_entropy_with_logits(logits, lam * ya + (1 - lam) * yb)
    assert mixup_loss(logits, ya, yb, lam).item() == pytest.approx(want.item(), rel=1e-6)
    pos = torch.tensor([1.0, 2.0, 3.0, 0.5])
    want = F.binary_cross_entropy_with_logits(logits, a, pos_weight=pos)
    assert mixup_loss(logits, a, a, 1.0, pos).item() == pytest.approx(want.item(), rel=1e-6)
    # class indices keep cross-entropy (weighted when asked)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    w = torch.tensor([1.0, 2.0, 1.0, 4.0])
    assert mixup_loss(logits, y, y, 1.0, w).item() == pytest.approx(F.cross_entropy(logits, y, weight=w).item())


def test_evaluate_multilabel_reports_map_and_auc_from_scikit_learn():
    torch.manual_seed(1)
    model = torch.nn.Linear(8, 3)
    x = torch.randn(29, 8)
    y = (torch.rand(29, 3) > 0.6).float()
    y[0] = torch.tensor([1.0, 1.0, 1.0])  # every class has a positive
    y[1] = 0.0
    out = evaluate(model, DataLoader(TensorDataset(x, y), batch_size=4), torch.device("cpu"))
    with torch.no_grad():
        logits = model(x)
    ref = multilabel_metrics(y, logits)
    assert out["map"] == pytest.approx(ref["mAP"]) and out["macro_auc"] == pytest.approx(ref["macro_auc"])
    assert out["loss"] == pytest.approx(F.binary_cross_entropy_with_logits(logits, y).item(), rel=1e-6)
    hits = y.gather(1, logits.argmax(1, keepdim=True)).sum().item()
    assert out["acc"] == pytest.approx(hits / 29) and out["count"] == 29


def test_selection_and_summary_use_the_tasks_metric():
    history = [{"epoch": 1, "val_acc": 0.9, "val_map": 0.40, "val_loss": 1.0, "test_acc": 0.8, "test_map": 0.3},
               {"epoch": 2, "val_acc": 0.5, "val_map": 0.70, "val_loss": 1.0, "test_acc": 0.4, "test_map": 0.6},
               {"epoch": 3, "val_acc": 0.6, "val_map": 0.65, "val_loss": 0.5, "test_acc": 0.9, "test_map": 0.5}]
    assert best_val_index(history) == 0
    assert best_val_index(history, "map") == 1
    s = summarize_history(history, "map")
    assert (s["best_val_epoch"], s["test_map_at_best_val"], s["best_test_map"], s["final_test_map"]) == (2, 0.6, 0.6, 0.5)
    s.update(epochs_planned=3, chance_acc=None)
    table = run_summary_table(s)
    assert "test mAP (%) at" in table and "60.00" in table and "chance" not in table


def test_multilabel_checkpoint_predicts_sigmoid_scores(tmp_path):
    torch.manual_seed(0)
    names = ["bird", "rain", "wind"]
    kwargs = {"d_model": 16, "d_state": 4, "pattern": "M", "sample_rate": 16000}
    model = create_model("helix_raw", 3, **kwargs).eval()
    payload = model_payload("helix_raw", 3, kwargs, model, names, 16000, 0.25, multilabel=True)
    save_checkpoint(tmp_path / "tags.pt", {"format": 1, **payload})
    assert load_model(tmp_path / "tags.pt").multilabel
    assert model_config(load_model_file(tmp_path / "tags.pt"))["multilabel"] is True  # survives safetensors export
    predictor = load_predictor(tmp_path / "tags.pt")
    wave = torch.randn(4000) * 0.1  # exactly one 0.25-s window
    with torch.no_grad():
        want = torch.sigmoid(model(wave[None])).numpy()[0]
    pred = predictor.predict(wave.numpy(), threshold=0.0)
    np.testing.assert_allclose(pred.probs, want, rtol=1e-5, atol=1e-6)
    assert not math.isclose(float(pred.probs.sum()), 1.0, abs_tol=1e-3)  # independent per-class scores
    assert [k for k, _ in pred.tags] == [names[i] for i in np.argsort(-want, kind="stable")]
    top = float(want.max())
    assert [k for k, _ in predictor.predict(wave.numpy(), threshold=top - 1e-6).tags] == [names[int(want.argmax())]]
    with pytest.raises(ValueError, match="threshold"):
        predictor.predict(wave.numpy(), threshold=2.0)
