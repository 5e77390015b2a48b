"""Evaluation is deterministic, unaugmented, exact, and leaves the model's mode alone."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from helix.core.evaluate import evaluate


class _Dropout(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 3)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x):
        return self.lin(self.drop(x))


def test_matches_a_manual_computation_and_is_repeatable():
    torch.manual_seed(0)
    model = _Dropout()
    x, y = torch.randn(37, 8), torch.randint(0, 3, (37,))
    loader = DataLoader(TensorDataset(x, y), batch_size=5)
    model.train()
    first = evaluate(model, loader, torch.device("cpu"))
    second = evaluate(model, loader, torch.device("cpu"))
    assert first == second and model.training  # dropout was off inside, mode restored after
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert first["count"] == 37
    assert first["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert first["acc"] == pytest.approx((logits.argmax(1) == y).float().mean().item())


def test_empty_loader_gives_nan():
    loader = DataLoader(TensorDataset(torch.zeros(0, 8), torch.zeros(0, dtype=torch.long)), batch_size=4)
    r = evaluate(torch.nn.Linear(8, 3), loader, torch.device("cpu"))
    assert r["count"] == 0 and math.isnan(r["acc"])
