"""Tiny configs for the training tests: synthetic 0.25-s clips (25 raw tokens), d_model 32,
two layers, a few dozen examples -- a full run takes a second or two on CPU."""

from __future__ import annotations

import pytest

from helix.training.config_io import load_config

TINY = [
    "data.name=synthetic_order", "data.clip_seconds=0.25", "data.num_workers=0",
    "data.task_kwargs={num_train: 48, num_val: 16, num_test: 24}",
    "model.name=helix_raw", "model.num_layers=2", "model.overrides={d_model: 32, d_state: 4}",
    "optim.epochs=2", "optim.batch_size=8", "optim.lr=0.003", "device=cpu", "log_every_steps=1",
]


def tiny_config(out_dir, *overrides: str):
    """A TrainConfig for a two-epoch run in ``out_dir``; later overrides win."""
    return load_config(None, TINY + [f"out_dir={out_dir}", *overrides])


@pytest.fixture
def tiny(tmp_path):
    return lambda *overrides, out="run": tiny_config(tmp_path / out, *overrides)


@pytest.fixture(autouse=True)
def _tiny_models_one_thread(one_thread):
    """Every training test runs with one torch thread (``one_thread`` in tests/conftest.py)."""
    yield
