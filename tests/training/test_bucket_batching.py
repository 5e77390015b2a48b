"""data.batching=bucket end to end on CPU: a folder corpus of real files from 0.08 s to 0.47 s
trains in length-bucketed, padded batches with lengths; a `helix train` killed with SIGKILL
mid-epoch resumes to the same steps, metrics and weights as an uninterrupted run; and the padding
changes nothing (a padded evaluation equals each clip evaluated alone)."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helix.cli import main
from helix.core.distributed import DistEnv
from helix.core.evaluate import evaluate
from helix.core.rundir import read_jsonl
from helix.models import create_model
from helix.models.checkpoint import load_checkpoint
from helix.training.config_io import load_config
from helix.training.loaders import build_run_data, eval_loader, start_epoch, train_loader

_spec = importlib.util.spec_from_file_location("helix_test_corpora", Path(__file__).parents[1] / "data" / "corpora.py")
corpora = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(corpora)

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# 22 training files, 4 per step, buckets carry their remainders up: 5 steps per epoch
SETTINGS = ["data.name=folder", "data.clip_seconds=0.4", "data.batching=bucket", "data.num_buckets=3",
            "data.num_workers=0", "model.name=helix_raw", "model.num_layers=2",
            "model.overrides={d_model: 16, d_state: 4}", "optim.epochs=3", "optim.batch_size=4", "optim.lr=0.003",
            "device=cpu", "log_every_steps=1", "checkpoint_every_steps=2"]
METRIC_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr", "step")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """28 files (two classes, 16 and 22.05 kHz) of 0.08 .. 0.47 s, prepared as a folder corpus."""
    root = tmp_path_factory.mktemp("bucket") / "mine"
    for k, name in enumerate(("hum", "whistle")):
        for i in range(14):
            corpora.write_audio(root / name / f"{i}.wav", 0.08 + 0.03 * i, (16000, 22050)[i % 2],
                                freq=200 + 1500 * k)
    assert main(["data", "prepare", "folder", "--root", str(root), "--no-progress"]) == 0
    return root


def test_bucketed_training_batches_are_padded_clips_with_their_lengths(corpus):
    cfg = load_config(None, SETTINGS + [f"data.root={corpus}"])
    data = build_run_data(cfg.data)
    loader = train_loader(data.train, 4, DistEnv(), 0, 0, False, num_buckets=3)
    assert len(loader) == 5
    start_epoch(loader, 0, 0, 0)
    batches = list(loader)
    seen = torch.cat([lengths for _, _, lengths in batches])
    assert len(batches) == 5 and len(set(seen.tolist())) > 5
    for wave, labels, lengths in batches:
        assert wave.shape[1] in loader.collate_fn.buckets and int(lengths.max()) <= wave.shape[1]
        for row, n in zip(wave, lengths):
            assert not row[n:].any()  # padding, never audio
    assert int(seen.max()) == 6400 and int(seen.min()) < 2000  # 0.4 s crops, 0.08 s clips unpadded
    # resuming mid-epoch skips exactly the batches already taken
    start_epoch(loader, 0, 0, 0, start_index=8)
    assert [b[2].tolist() for b in loader] == [b[2].tolist() for b in batches[2:]]


@pytest.mark.slow  # started first (tests/conftest.py)
def test_sigkill_then_resume_reproduces_the_uninterrupted_bucketed_run(corpus, tmp_path):
    config = tmp_path / "bucket.yaml"
    config.write_text(load_config(None, SETTINGS + [f"data.root={corpus}"]).to_yaml())
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    command = [sys.executable, "-m", "helix.cli", "train", "--config", str(config), "--out"]
    subprocess.run(command + [str(whole)], env=ENV, check=True, capture_output=True, timeout=300)
    assert [r["step"] for r in read_jsonl(whole / "metrics.jsonl")] == [5, 10, 15]

    proc = subprocess.Popen(command + [str(killed)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    # kill once step 8 is logged: the newest checkpoint is then step 8, batch 3 of epoch 2
    while len(read_jsonl(killed / "steps.jsonl")) < 8:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "the run never reached step 8"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    ck = load_checkpoint(killed / "last.pt")
    assert ck["step"] < 15 and ck["train_state"]["batch_in_epoch"] > 0, "the kill did not land mid-epoch"

    subprocess.run([sys.executable, "-m", "helix.cli", "train", "--out", str(killed), "--resume"], env=ENV,
                   check=True, capture_output=True, timeout=300)
    steps = [read_jsonl(d / "steps.jsonl") for d in (whole, killed)]
    assert [s["step"] for s in steps[1]] == list(range(1, 16))
    assert [(s["loss"], s["grad_norm"]) for s in steps[0]] == [(s["loss"], s["grad_norm"]) for s in steps[1]]
    epochs = [read_jsonl(d / "metrics.jsonl") for d in (whole, killed)]
    assert [[r[k] for k in METRIC_KEYS] for r in epochs[0]] == [[r[k] for k in METRIC_KEYS] for r in epochs[1]]
    a, b = (load_checkpoint(d / "last.pt")["model_state"] for d in (whole, killed))
    assert all(torch.equal(a[k], b[k]) for k in a)

    # padding changes nothing: the logged (padded) validation/test numbers of the last epoch are
    # those of every clip evaluated alone, unpadded, with the final weights
    cfg = load_config(None, SETTINGS + [f"data.root={corpus}"])
    data = build_run_data(cfg.data)
    model = create_model("helix_raw", 2, **cfg.model_kwargs())
    model.load_state_dict(a)
    last = epochs[0][-1]
    for split, ds in (("val", data.val), ("test", data.test)):
        alone = evaluate(model, eval_loader(ds, 1, DistEnv(), 0, False, padded=True), torch.device("cpu"))
        padded = evaluate(model, eval_loader(ds, len(ds), DistEnv(), 0, False, padded=True), torch.device("cpu"))
        assert alone["loss"] == pytest.approx(last[f"{split}_loss"], rel=1e-5, abs=1e-6)
        assert padded["loss"] == pytest.approx(alone["loss"], rel=1e-5, abs=1e-6)
        assert padded["acc"] == alone["acc"] == last[f"{split}_acc"]


def test_bucket_batching_refusals(tmp_path):
    with pytest.raises(ValueError, match="data.batching must be fixed or bucket, got 'buckets'"):
        load_config(None, ["data.batching=buckets"])
    cfg = load_config(None, ["data.name=synthetic_order", "data.batching=bucket", "data.clip_seconds=0.25"])
    with pytest.raises(ValueError, match=r"synthetic_order builds every clip at clip_seconds.*data.batching=bucket"):
        build_run_data(cfg.data)


def test_augmentation_and_mixup_of_a_padded_batch_stay_within_each_clip():
    import numpy as np

    from helix.training.augment import augment_waveforms, step_generators
    from helix.training.config import AugmentConfig
    from helix.training.mixup import mixup_batch, mixup_clips

    lengths = torch.tensor([1000, 1600, 400])
    wave = torch.zeros(3, 1600)
    for i, n in enumerate(lengths):
        wave[i, :n] = torch.arange(1, n + 1, dtype=torch.float32)
    aug = AugmentConfig(time_shift_s=0.05, gain_min=1.0, gain_max=1.0, noise_std=0.01)
    host, dev = step_generators(0, 3, 0, torch.device("cpu"))
    out = augment_waveforms(wave, aug, 16000, host, dev, lengths)
    for row, clean, n in zip(out, wave, lengths):
        assert not row[n:].any()  # no shifted audio or noise in the padding
        # shifted around the clip's own length: the same samples, plus noise
        assert torch.allclose(row[:n].sort().values, clean[:n].sort().values, atol=0.05)
    mixed, a, b, lam, mixed_lengths = mixup_clips(wave, torch.arange(3), lengths, 0.3, np.random.default_rng(1))
    assert lam < 1 and b.tolist() != [0, 1, 2]  # labels are the clip indices: b is the partner
    assert mixed_lengths.tolist() == torch.maximum(lengths, lengths[b]).tolist()
    plain = mixup_batch(wave, torch.arange(3), 0.3, np.random.default_rng(1))
    assert torch.equal(plain[0], mixed) and plain[3] == lam  # the same draws as unpadded mixup


@pytest.mark.slow  # started first (tests/conftest.py)
def test_bucketed_run_on_two_gloo_processes_matches_one_process(corpus, tmp_path):
    """torchrun with data.batching=bucket: each rank takes its slice of every global batch (padded to
    its own bucket), and the run gives the same steps, losses and weights as one process. Random draws
    are per rank, so augmentation is off and the clip limit (0.5 s) is above every file (0.47 s at most):
    no random crops."""
    settings = SETTINGS + [f"data.root={corpus}", "augment.enabled=false", "optim.epochs=2", "data.clip_seconds=0.5"]
    config = tmp_path / "bucket.yaml"
    config.write_text(load_config(None, settings).to_yaml())
    runs = {}
    for name, launcher in (("single", [sys.executable]),
                           ("ddp", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                    "--nproc_per_node", "2"])):
        proc = subprocess.run([*launcher, "-m", "helix.cli", "train", "--config", str(config), "--out",
                               str(tmp_path / name)], env=ENV, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        runs[name] = tmp_path / name
    a, b = (read_jsonl(runs[k] / "steps.jsonl") for k in ("single", "ddp"))
    assert len(a) == len(b) == 10
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], rel=1e-4)
    ma, mb = (read_jsonl(runs[k] / "metrics.jsonl") for k in ("single", "ddp"))
    for ra, rb in zip(ma, mb):
        for key in ("train_loss", "val_loss", "test_loss"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-4), key
    wa, wb = (load_checkpoint(runs[k] / "last.pt")["model_state"] for k in ("single", "ddp"))
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-3, atol=2e-4)
