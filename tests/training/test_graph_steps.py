"""CUDA-graph captured training steps (``cuda_graphs``): the step function a graph captures computes
what the eager step computes (CPU, run eagerly), the trainer picks eager or captured with a reason,
and on the GPU N replayed trainer steps equal N eager ones (losses, weights)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helix.core.rundir import read_jsonl
from helix.models.checkpoint import load_checkpoint
from helix.training.loaders import start_epoch
from helix.training.loop import Trainer
from helix.training.step import GraphedSteps, optimizer_step

CUDA = torch.cuda.is_available()


def _steps(trainer: Trainer, graph_form: bool, n: int, accum: int):
    """n optimizer steps from the trainer's loader -> per-step stats (loss, norm, hits)."""
    p = trainer.step_parts
    run = GraphedSteps(p, capture=False) if graph_form else (lambda b, s: optimizer_step(p, b, s))
    start_epoch(trainer.train_loader, trainer.cfg.seed, 0, 0, 0)
    batches = iter(trainer.train_loader)
    return [run(batches, step)[0].clone() for step in range(n)]


@pytest.mark.parametrize("accum, mixup", [(1, 0.3), (2, 0.3), (1, 0.0)])
def test_the_captured_step_function_equals_the_eager_step(tiny, accum, mixup):
    """Tensor mixup weights (always both loss terms), one function over every micro-batch, the update
    inside: the same losses, norms, hits and weights as the eager step, bit for bit on CPU."""
    over = [f"optim.grad_accum_steps={accum}", f"augment.mixup_alpha={mixup}", "optim.epochs=1"]
    a, b = Trainer(tiny(*over, out="eager"), verbose=False), Trainer(tiny(*over, out="graph"), verbose=False)
    a.setup()
    stats_a = _steps(a, False, 4, accum)
    b.setup()
    stats_b = _steps(b, True, 4, accum)
    assert not a.graphs and not b.graphs  # CPU: auto -> off
    for x, y in zip(stats_a, stats_b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    for (name, x), y in zip(a.raw_model.state_dict().items(), b.raw_model.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)
    assert a.scheduler.last_epoch == b.scheduler.last_epoch == 4


def test_on_is_refused_on_cpu_and_unknown_settings_too(tiny):
    with pytest.raises(ValueError, match="cuda_graphs: on needs a CUDA device"):
        Trainer(tiny("cuda_graphs=on", out="on"), verbose=False).fit()
    with pytest.raises(ValueError, match="cuda_graphs must be auto, on or off"):
        tiny("cuda_graphs=sometimes")


def test_saved_optimizer_state_is_plain_numbers(tiny):
    """A captured run keeps its learning rates in device tensors; last.pt stores floats and
    non-capturable groups, so an eager (or CPU) resume of it works."""
    trainer = Trainer(tiny("optim.epochs=1", out="plain"), verbose=False)
    trainer.setup()
    for group in trainer.optimizer.param_groups:  # what GraphedSteps does on CUDA
        group["lr"], group["capturable"] = torch.tensor(float(group["lr"])), True
    trainer._save(trainer.last_path)
    groups = load_checkpoint(trainer.last_path)["optimizer_state"]["param_groups"]
    assert all(type(g["lr"]) is float and not g["capturable"] for g in groups)


gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("model", ["pure_mamba_raw", "helix_mel", "helix_raw lean"])
def test_gpu_replayed_trainer_steps_equal_eager_steps(tiny, model):
    """Warm-up, capture and replays through a whole run (train and eval graphs, one per shape):
    the per-step losses and the final weights match an eager run within bf16 tolerance. ``lean``: every
    block lean, so the captured step also recomputes the raw frontend, the attention block and the BiMamba
    blocks' activations in backward (checkpoints inside the graph)."""
    name, *lean = model.split()
    # loader workers: the pin-memory thread allocates while the step is being captured
    common = ["device=cuda", "precision=bf16", f"model.name={name}", "optim.epochs=3", "data.num_workers=2",
              "data.task_kwargs={num_train: 64, num_val: 20, num_test: 24}",
              *(["model.overrides.lean_blocks=true"] if lean else [])]
    eager = Trainer(tiny(*common, "cuda_graphs=off", out="eager"), verbose=False)
    graphed = Trainer(tiny(*common, "cuda_graphs=on", out="graphed"), verbose=False)
    sa, sb = eager.fit(), graphed.fit()
    assert not eager.graphs and graphed.graphs
    assert graphed.step_fn.run.captured, "no graph was captured"
    assert not graphed.step_fn.run.graphs, "fit keeps its graphs after it ends"
    la = [r["loss"] for r in read_jsonl(Path(eager.cfg.out_dir) / "steps.jsonl")]
    lb = [r["loss"] for r in read_jsonl(Path(graphed.cfg.out_dir) / "steps.jsonl")]
    assert len(la) == len(lb) == 24
    torch.testing.assert_close(torch.tensor(lb), torch.tensor(la), rtol=2e-2, atol=2e-2)
    for (name, x), y in zip(eager.raw_model.state_dict().items(), graphed.raw_model.state_dict().values()):
        torch.testing.assert_close(y, x, rtol=5e-2, atol=5e-3, msg=name)
    assert abs(sa["best_val_acc"] - sb["best_val_acc"]) <= 0.1


@gpu
@pytest.mark.gpu
def test_gpu_preparing_a_batch_never_waits_for_the_device(tiny):
    """Drawing and augmenting a micro-batch (shifts, gains, noise, mixup; random numbers from the
    host) makes no host-device synchronization: a blocking copy of the host's numbers made every
    step wait for the previous step's kernels, and the GPU idle meanwhile."""
    from helix.training.step import draw_micro_batch

    trainer = Trainer(tiny("device=cuda", "precision=bf16", "augment.mixup_alpha=0.3", "data.num_workers=1",
                           out="sync"), verbose=False)
    trainer.setup()
    start_epoch(trainer.train_loader, trainer.cfg.seed, 0, 0, 0)
    batch = next(iter(trainer.train_loader))
    draw_micro_batch(trainer.step_parts, batch, 0, 0)  # first use: lazy initialisation may sync
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        m = draw_micro_batch(trainer.step_parts, batch, 1, 0)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert m.lam < 1.0 and m.wave.is_cuda


# length-bucketed batches: the folder corpus of real files from tests/training/test_bucket_batching.py
from tests.training.test_bucket_batching import SETTINGS as BUCKET, corpus  # noqa: E402,F401


def test_the_captured_step_function_equals_the_eager_step_on_length_buckets(corpus, tmp_path):
    """Lengths checked on the host, then handed to the step as a device tensor (what the graph gets):
    the same numbers as the eager step, which hands the model host lengths."""
    from helix.training.config_io import load_config

    def trainer(out):
        t = Trainer(load_config(None, BUCKET + [f"data.root={corpus}", f"out_dir={tmp_path / out}"]), verbose=False)
        t.setup()
        return t

    # one after the other: set-up seeds the global generators that the random crops draw from
    a = trainer("eager")
    stats_a = _steps(a, False, 4, 1)
    b = trainer("graph")
    stats_b = _steps(b, True, 4, 1)
    for x, y in zip(stats_a, stats_b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    for (name, x), y in zip(a.raw_model.state_dict().items(), b.raw_model.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)


@gpu
@pytest.mark.gpu
def test_gpu_replayed_bucketed_steps_equal_eager_steps(corpus, tmp_path):
    """One graph per bucket shape: a whole bucketed run captured matches the eager run."""
    from helix.training.config_io import load_config

    common = BUCKET + [f"data.root={corpus}", "device=cuda", "precision=bf16", "optim.epochs=6",
                       "checkpoint_every_steps=0"]
    eager = Trainer(load_config(None, common + ["cuda_graphs=off", f"out_dir={tmp_path / 'e'}"]), verbose=False)
    graphed = Trainer(load_config(None, common + ["cuda_graphs=on", f"out_dir={tmp_path / 'g'}"]), verbose=False)
    eager.fit()
    graphed.fit()
    assert graphed.step_fn.run.captured >= 2, "expected a graph per bucket"
    la = [r["loss"] for r in read_jsonl(Path(eager.cfg.out_dir) / "steps.jsonl")]
    lb = [r["loss"] for r in read_jsonl(Path(graphed.cfg.out_dir) / "steps.jsonl")]
    torch.testing.assert_close(torch.tensor(lb), torch.tensor(la), rtol=2e-2, atol=2e-2)
    for (name, x), y in zip(eager.raw_model.state_dict().items(), graphed.raw_model.state_dict().values()):
        torch.testing.assert_close(y, x, rtol=5e-2, atol=5e-3, msg=name)


def test_audio_mamba_with_buckets_stays_eager_and_says_why(corpus, tmp_path):
    from helix.training.config_io import load_config

    cfg = load_config(None, [s for s in BUCKET if not s.startswith("model.")] + [
        f"data.root={corpus}", "model.name=aum_tiny", "cuda_graphs=on", f"out_dir={tmp_path / 'aum'}"])
    with pytest.raises(ValueError, match="reads clip lengths on the host"):
        Trainer(cfg, verbose=False).setup()
