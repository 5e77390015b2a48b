"""The training loop on tiny CPU runs: run folder, checkpoint contract, seeds, accumulation,
non-finite losses, and resume refusals."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from helix.models import create_model
from helix.models.checkpoint import load_checkpoint
from helix.training.loaders import build_run_data
from helix.training.loop import NonFiniteLossError, Trainer
from helix.core.rundir import read_jsonl, source_digest

LOSS_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr")


def _losses(run_dir):
    return [r["loss"] for r in read_jsonl(run_dir / "steps.jsonl")]


def test_run_folder_and_checkpoint_contract(tiny):
    cfg = tiny()
    summary = Trainer(cfg, verbose=False).fit()
    out = Path(cfg.out_dir)
    for name in ("config.yaml", "env.json", "metrics.jsonl", "steps.jsonl", "summary.json", "best.pt", "last.pt"):
        assert (out / name).is_file(), name
    assert any((out / "tb").glob("events.out.tfevents.*"))
    env = json.loads((out / "env.json").read_text())
    assert {"torch", "git_commit", "device", "world_size", "precision"} <= set(env) and env["precision"] == "fp32"
    assert env["source_sha256"] == source_digest()  # names the code where a copied tree's .git is stale
    history = read_jsonl(out / "metrics.jsonl")
    assert [r["epoch"] for r in history] == [1, 2] and all(k in history[0] for k in LOSS_KEYS)
    assert [r["step"] for r in read_jsonl(out / "steps.jsonl")] == list(range(1, 13))  # 48 / 8 = 6 steps/epoch
    assert summary["best_test_label"] == "best test (paper protocol)"
    assert summary["best_test_acc"] == max(r["test_acc"] for r in history)
    assert summary["final_test_acc"] == history[-1]["test_acc"]
    assert summary["chance_acc"] == pytest.approx(1 / 6)

    ck = load_checkpoint(out / "best.pt")
    assert ck["class_names"] == build_run_data(cfg.data).class_names
    assert ck["sample_rate"] == 16000 and ck["clip_seconds"] == 0.25
    assert ck["model"]["kwargs"]["pattern"] == "MA" and ck["model"]["num_classes"] == 6
    model = create_model(ck["model"]["name"], ck["model"]["num_classes"], **ck["model"]["kwargs"])
    model.load_state_dict(ck["model_state"])
    assert model(torch.zeros(2, 4000)).shape == (2, 6)
    last = load_checkpoint(out / "last.pt")
    assert last["epoch"] == 2 and last["step"] == 12
    assert {"optimizer_state", "scheduler_state", "rng_state", "config", "metrics"} <= set(last)


def test_same_seed_same_run_other_seed_differs(tiny):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        cfg = tiny(f"seed={seed}", "optim.epochs=1", out=name)
        Trainer(cfg, verbose=False).fit()
        runs[name] = _losses(Path(cfg.out_dir))
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]


def test_gradient_accumulation_matches_the_full_batch(tiny):
    ref = tiny("augment.enabled=false", "optim.epochs=1", out="full")
    acc = tiny("augment.enabled=false", "optim.epochs=1", "optim.grad_accum_steps=2", out="accum")
    Trainer(ref, verbose=False).fit()
    Trainer(acc, verbose=False).fit()
    a, b = (Path(c.out_dir) for c in (ref, acc))
    assert _losses(a) == pytest.approx(_losses(b), rel=1e-5, abs=1e-6)
    # Adam is blind to a gradient scale, so check the norms: a missing 1/accum would double them
    norms = [[r["grad_norm"] for r in read_jsonl(p / "steps.jsonl")] for p in (a, b)]
    assert norms[0] == pytest.approx(norms[1], rel=1e-4)
    wa, wb = (load_checkpoint(p / "last.pt")["model_state"] for p in (a, b))
    for k in wa:  # Adam amplifies float rounding on near-zero gradients a little
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=2e-4)


class _PoisonAfter(torch.utils.data.Dataset):
    """Returns NaN waveforms once ``after`` items have been read (i.e. from a known step on)."""

    def __init__(self, base, after):
        self.base, self.after, self.reads = base, after, 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        wave, label = self.base[i]
        self.reads += 1
        return (torch.full_like(wave, math.nan) if self.reads > self.after else wave), label


def test_nonfinite_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(tiny):
    cfg = tiny("optim.epochs=3")
    data = build_run_data(cfg.data)
    data.train = _PoisonAfter(data.train, after=48)  # epoch 1 (6 steps of 8) is clean
    trainer = Trainer(cfg, data=data, verbose=False)
    out = Path(cfg.out_dir)
    with pytest.raises(NonFiniteLossError, match=r"optimizer step 7 \(epoch 2, batch 1/6\)") as err:
        trainer.fit()
    assert "last good checkpoint" in str(err.value) and "epoch 1, step 6" in str(err.value)
    ck = load_checkpoint(out / "last.pt")
    assert ck["step"] == 6 and all(torch.isfinite(v).all() for v in ck["model_state"].values())
    digest = hashlib.sha256((out / "last.pt").read_bytes()).hexdigest()
    assert [e["step"] for e in read_jsonl(out / "events.jsonl")] == [7]
    assert digest == hashlib.sha256((out / "last.pt").read_bytes()).hexdigest()
    assert len(read_jsonl(out / "metrics.jsonl")) == 1
    # the non-finite update was skipped on the device, before the host read the loss
    assert all(torch.isfinite(p).all() for p in trainer.raw_model.parameters())


def test_refuses_to_overwrite_or_resume_with_another_config(tiny):
    cfg = tiny("optim.epochs=1")
    Trainer(cfg, verbose=False).fit()
    with pytest.raises(ValueError, match="already holds a run"):
        Trainer(cfg, verbose=False).fit()
    changed = tiny("optim.epochs=1", "optim.lr=0.01")
    with pytest.raises(ValueError, match=r"optim.lr: 0.003 -> 0.01"):
        Trainer(changed, resume=True, verbose=False).fit()


def test_a_model_trained_at_8_khz_loads_and_predicts_at_8_khz(tiny, tmp_path):
    import numpy as np
    import soundfile as sf

    import helix

    cfg = tiny("data.sample_rate=8000", "optim.epochs=1", "model.name=helix_mel")
    Trainer(cfg, verbose=False).fit()
    ck = load_checkpoint(Path(cfg.out_dir) / "best.pt")
    assert ck["sample_rate"] == 8000 and ck["model"]["kwargs"]["sample_rate"] == 8000
    model = helix.load(Path(cfg.out_dir) / "best.pt")
    assert model.sample_rate == 8000
    # a 16 kHz file is resampled to the model's 8 kHz on the way in
    path = tmp_path / "clip.wav"
    sf.write(path, (0.1 * np.sin(np.arange(16000) * 0.05)).astype(np.float32), 16000)
    prediction = model.predict(str(path))
    assert prediction.duration == pytest.approx(1.0) and len(prediction.probs) == 6


def test_cpu_threads_auto_for_small_models_explicit_otherwise_and_restored(tiny, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)  # the one_thread fixture restores the caller's count afterwards
    auto = tiny("optim.epochs=1", out="auto")
    Trainer(auto, verbose=False).fit()
    assert json.loads((Path(auto.out_dir) / "env.json").read_text())["cpu_threads"] == 1  # a tiny model
    assert torch.get_num_threads() == 2
    explicit = tiny("optim.epochs=1", "cpu_threads=3", out="explicit")
    Trainer(explicit, verbose=False).fit()
    assert json.loads((Path(explicit.out_dir) / "env.json").read_text())["cpu_threads"] == 3
    assert torch.get_num_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # torchrun's way of saying it: kept
    env = tiny("optim.epochs=1", out="env")
    Trainer(env, verbose=False).fit()
    assert json.loads((Path(env.out_dir) / "env.json").read_text())["cpu_threads"] == 2


def test_auto_thread_count():
    from helix.core.threads import SMALL_ACTIVATION, auto_cpu_threads, usable_cores

    assert auto_cpu_threads(32 * 50 * 32, num_workers=0) == 1  # the demo: 51k elements per layer
    big = auto_cpu_threads(32 * 500 * 256, num_workers=0)      # ESC-50 at the paper's width
    assert 1 <= big <= usable_cores()
    assert auto_cpu_threads(SMALL_ACTIVATION, num_workers=usable_cores()) == 1


def test_the_next_epoch_starts_loading_during_evaluation_with_the_same_batches(tiny):
    """With loader workers, epoch e+1's iterator is started before epoch e is evaluated (its first
    batches are then ready when training resumes); the shuffle and the workers' seeds must be exactly
    those of an iterator started at the epoch's first step."""

    class Late(Trainer):
        def _start_epoch_early(self, epoch):  # the old order: every epoch starts its loader cold
            self._early_epoch = None

    class Recorded(Trainer):
        seen = []

        def _train_epoch(self, epoch):
            self.seen.append(None if self._early_epoch is None else self._early_epoch[0])
            return super()._train_epoch(epoch)

    settings = ("data.num_workers=1", "optim.epochs=3", "augment.mixup_alpha=0.3")
    early = Recorded(tiny(*settings, out="early"), verbose=False)
    late = Late(tiny(*settings, out="late"), verbose=False)
    early.fit(), late.fit()
    assert Recorded.seen == [None, 1, 2]  # epochs 2 and 3 found their loader already started
    assert _losses(Path(early.cfg.out_dir)) == _losses(Path(late.cfg.out_dir))
    for (name, a), b in zip(early.raw_model.state_dict().items(), late.raw_model.state_dict().values()):
        assert torch.equal(a, b), name
