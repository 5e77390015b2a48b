"""The training loop measures how long it waits for the loader (``data_wait_frac`` per epoch, ``data N%``
in the epoch line): a loader slower than the step shows as most of the epoch, and a checkpoint
written before the measurement existed still resumes."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

from helix.core.rundir import read_jsonl
from helix.models.checkpoint import load_checkpoint
from helix.training.loaders import TimedBatches, build_run_data
from helix.training.loop import LOADER_BOUND_FRAC, Trainer, _epoch_line, loader_hint
from helix.training.resume import restore_training_state


class SlowClips(Dataset):
    """Another dataset's clips, each read taking ``seconds`` (a loader slower than the step)."""

    def __init__(self, base: Dataset, seconds: float):
        self.base, self.seconds = base, seconds

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        time.sleep(self.seconds)
        return self.base[i]


def test_timed_batches_add_up_the_wait_and_hand_it_over_once():
    def slow():
        for i in range(3):
            time.sleep(0.02)
            yield i

    batches = TimedBatches(slow())
    assert [next(batches), next(batches)] == [0, 1]
    first = batches.take()
    assert first >= 0.04 and batches.take() == 0.0
    assert list(batches) == [2] and batches.take() >= 0.02


def test_a_slow_loader_shows_as_most_of_the_epoch_and_the_run_says_what_to_change(tiny, capsys):
    cfg = tiny("optim.epochs=2")
    data = build_run_data(cfg.data)
    data.train = SlowClips(data.train, 0.05)  # 400 ms a batch of 8: far longer than the tiny step
    Trainer(cfg, data=data, verbose=True).fit()
    record = read_jsonl(Path(cfg.out_dir) / "metrics.jsonl")[0]
    assert 0.6 < record["data_wait_frac"] <= 1.0, record
    out = capsys.readouterr().out
    assert f"data {record['data_wait_frac']:.0%}" in out
    # the advice comes once a run, naming the setting to change
    assert out.count("the loader kept training waiting") == 1 and "data.num_workers=0 now" in out
    assert "data.cache=memory" in out
    fast = tiny("optim.epochs=1", out="fast")
    Trainer(fast, verbose=True).fit()
    fast_frac = read_jsonl(Path(fast.out_dir) / "metrics.jsonl")[0]["data_wait_frac"]
    assert fast_frac < record["data_wait_frac"]
    # advice only past the bound (the synthetic tiny run waits ~10-20%, more on a loaded machine)
    assert ("the loader kept training waiting" in capsys.readouterr().out) == (fast_frac >= LOADER_BOUND_FRAC)


def test_the_hint_leaves_out_a_cache_already_set():
    assert "data.cache" not in loader_hint(0.5, 8, "memory")
    assert loader_hint(0.456, 2, "none").startswith("the loader kept training waiting 46% of this epoch")


def test_a_checkpoint_without_the_wait_sums_resumes(tiny):
    cfg = tiny("optim.epochs=1")
    trainer = Trainer(cfg, verbose=False)
    trainer.fit()
    ck = load_checkpoint(Path(cfg.out_dir) / "last.pt")
    ck["train_state"]["epoch_sums"] = {"loss": 1.0, "correct": 2.0, "count": 8.0, "seconds": 0.5}  # older runs
    state = restore_training_state(ck, trainer.raw_model, trainer.optimizer, trainer.scheduler, trainer.scaler,
                                   torch.device("cpu"))
    assert state.epoch_sums == {"loss": 1.0, "correct": 2.0, "count": 8.0, "seconds": 0.5, "data_seconds": 0.0}
    # and an epoch line of such a run has no wait figure rather than a made-up one
    assert "data" not in _epoch_line({**read_jsonl(Path(cfg.out_dir) / "metrics.jsonl")[0], "data_wait_frac": None}, 1)
