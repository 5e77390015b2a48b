"""Class imbalance: the class-balanced sampler (resumable, sharded over ranks like the plain one)
and class-weighted losses, wired into a real run on an imbalanced folder corpus."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from helix.cli import main
from helix.core.distributed import ResumableWeightedSampler
from helix.data.sampling import balanced_sample_weights, class_loss_weights
from helix.training.config_io import load_config
from helix.training.loop import Trainer

_spec = importlib.util.spec_from_file_location("helix_test_corpora", Path(__file__).parents[1] / "data" / "corpora.py")
corpora = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(corpora)


def test_weighted_sampler_resumes_and_shards_like_the_plain_one():
    weights = np.r_[np.full(18, 1 / 18), np.full(4, 1 / 4)]  # 22 items, two classes, balanced weights
    one = ResumableWeightedSampler(weights, num_replicas=1, rank=0, seed=7)
    one.set_epoch(3)
    full = list(one)
    assert len(full) == len(one) == 22
    one.set_epoch(3, start_index=9)
    assert list(one) == full[9:] and len(one) == 13  # a resumed epoch continues the same draw
    ranks = [ResumableWeightedSampler(weights, num_replicas=2, rank=r, seed=7) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(3)
    a, b = (list(r) for r in ranks)
    assert len(a) == len(b) == 11 and [x for pair in zip(a, b) for x in pair] == full
    one.set_epoch(4)
    assert list(one) != full  # a new epoch, a new draw
    with pytest.raises(ValueError, match="sampling weights"):
        ResumableWeightedSampler(np.zeros(5), 1, 0, 0)


def test_balanced_draws_even_out_the_classes():
    labels = np.r_[np.zeros(90, int), np.ones(10, int)]
    table = np.eye(2)[labels]
    weights = table @ (1 / table.sum(0))
    s = ResumableWeightedSampler(weights, 1, 0, seed=0)
    draws = []
    for epoch in range(20):
        s.set_epoch(epoch)
        draws += list(s)
    share = labels[draws].mean()
    assert 0.45 < share < 0.55  # the rare class drawn as often as the common one (10% without)


@pytest.fixture(scope="module")
def skewed(tmp_path_factory):
    root = tmp_path_factory.mktemp("skew") / "data"
    for name, n, freq in (("common", 20, 300.0), ("rare", 6, 1500.0)):
        for i in range(n):
            corpora.write_audio(root / name / f"{i}.wav", 0.2, 16000, freq=freq + 10 * i)
    assert main(["data", "prepare", "folder", "--root", str(root), "--no-progress"]) == 0
    return root


def test_a_run_with_balanced_sampling_and_class_weights(skewed, tmp_path):
    cfg = load_config("folder", [f"data.root={skewed}", f"out_dir={tmp_path / 'run'}", "data.num_workers=0",
                                 "model.num_layers=2", "model.overrides={d_model: 16, d_state: 4}",
                                 "optim.epochs=1", "optim.batch_size=4", "device=cpu",
                                 "data.batching=fixed", "data.balanced_sampling=true", "optim.class_weights=balanced"])
    trainer = Trainer(cfg, verbose=False)
    summary = trainer.fit()
    assert summary["epochs_completed"] == 1
    sampler = trainer.train_loader.sampler
    assert isinstance(sampler, ResumableWeightedSampler)
    np.testing.assert_allclose(sampler.weights.numpy(), balanced_sample_weights(trainer.data.train))
    want = class_loss_weights(trainer.data.train)
    np.testing.assert_allclose(trainer.class_weights.cpu().numpy(), want, rtol=1e-6)
    assert want[1] > want[0] > 0  # the rare class weighs more


def test_imbalance_options_are_checked(skewed, tmp_path):
    with pytest.raises(ValueError, match="optim.class_weights must be balanced or null"):
        load_config("folder", ["optim.class_weights=inverse"])
    cfg = load_config(None, ["data.name=synthetic_order", "data.clip_seconds=0.25", "data.num_workers=0",
                             "data.task_kwargs={num_train: 16, num_val: 8, num_test: 8}", "device=cpu",
                             "model.num_layers=1", "model.overrides={d_model: 16, d_state: 4}", "optim.batch_size=4",
                             f"out_dir={tmp_path / 's'}", "data.balanced_sampling=true"])
    with pytest.raises(ValueError, match="data.balanced_sampling: .* no labels to balance"):
        Trainer(cfg, verbose=False).fit()
