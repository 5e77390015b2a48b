"""Data-parallel training: `torchrun --nproc_per_node 2` on CPU (gloo) with the same config file as
a single process must give the same per-step losses, metrics and weights (same global batch of 8;
augmentation off, because its random draws are per rank)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helix.models.checkpoint import load_checkpoint
from helix.core.rundir import read_jsonl

from .conftest import TINY

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# odd evaluation sizes: the two ranks' shards differ in length and must still sum exactly
SETTINGS = TINY + ["augment.enabled=false", "data.task_kwargs={num_train: 48, num_val: 15, num_test: 23}",
                   "eval_batch_size=4"]


# `helix train` as the CLI runs it, then the process group's threads (Linux names them) must be
# gone: threads that outlived destroy_process_group were torn down while the interpreter exited,
# which now and then aborted a finished run ("terminate called without an active exception")
THREADS_AFTER_RUN = """
import os, sys
from helix.cli import main
code = main(sys.argv[1:])
names = []
for t in os.listdir("/proc/self/task"):
    try:
        names.append(open(f"/proc/self/task/{t}/comm").read().strip())
    except OSError:
        pass  # a thread that ended meanwhile
# one file per rank: the ranks share stdout, where their lines can interleave
with open(os.path.join(os.path.dirname(__file__), f"threads_rank{os.environ['RANK']}.txt"), "w") as f:
    f.write(repr(sorted(n for n in names if "gloo" in n)))
sys.exit(code)
"""


# the trainer with what a captured DDP step runs -- no DDP wrapper, the gradients averaged by one
# all-reduce inside the step function -- run eagerly, so the path is checked on CPU (gloo) too
AVERAGED_IN_STEP = """
import sys  # argv: train --config FILE --out DIR, as helix train takes them
from helix.core.distributed import cleanup_distributed
from helix.core.graphs import GraphDecision
from helix.training.config_io import load_config
from helix.training.loop import Trainer
from helix.training.step import GraphedSteps

class AveragedInStep(Trainer):
    def _graph_decision(self):
        return GraphDecision(True, "the captured step's function, run eagerly")

    def _setup_graphs(self):
        assert self.grads_averaged_in_step and self.model is self.raw_model
        self.graphs, self.eval_forward = False, None
        self.step_fn = GraphedSteps(self.step_parts, capture=False)

try:
    AveragedInStep(load_config(sys.argv[3], ["out_dir=" + sys.argv[5]]), verbose=False).fit()
finally:
    cleanup_distributed()
"""


def _train(args: list[str], out: Path, entry: list[str] = ("-m", "helix.cli"), env=None) -> subprocess.CompletedProcess:
    proc = subprocess.run([*args, *entry, "train", "--config", str(out.parent / "cfg.yaml"),
                           "--out", str(out)], env=env or ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _train_two_ranks(out: Path) -> None:
    """The same run under torchrun with two gloo ranks, each checking that no thread of the process
    group outlived it."""
    script = out.parent / "train_then_list_threads.py"
    script.write_text(THREADS_AFTER_RUN)
    _train([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"], out,
           entry=[str(script)])
    if Path("/proc/self/task").is_dir():
        left = [(out.parent / f"threads_rank{r}.txt").read_text() for r in (0, 1)]
        assert left == ["[]", "[]"], f"gloo threads after the run, per rank: {left}"


@pytest.mark.slow  # started first (tests/conftest.py)
def test_two_gloo_processes_match_one_process(tmp_path):
    from helix.training.config_io import load_config

    (tmp_path / "cfg.yaml").write_text(load_config(None, SETTINGS).to_yaml())
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _train([sys.executable], single)
    _train_two_ranks(ddp)

    env = json.loads((ddp / "env.json").read_text())
    assert env["world_size"] == 2
    a, b = (read_jsonl(d / "steps.jsonl") for d in (single, ddp))
    assert len(a) == len(b) == 12
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], rel=1e-4)
    assert [r["grad_norm"] for r in a] == pytest.approx([r["grad_norm"] for r in b], rel=1e-3)
    ma, mb = (read_jsonl(d / "metrics.jsonl") for d in (single, ddp))
    for ra, rb in zip(ma, mb):
        # equal mean losses: every validation/test example was counted exactly once over the ranks
        for key in ("train_loss", "val_loss", "test_loss"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-4), key
        assert abs(ra["test_acc"] - rb["test_acc"]) <= 1 / 23 and abs(ra["val_acc"] - rb["val_acc"]) <= 1 / 15
    wa, wb = (load_checkpoint(d / "last.pt")["model_state"] for d in (single, ddp))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-3, atol=2e-4)
    assert len(mb) == 2  # only rank 0 logs

    # gradients averaged by the step itself (what a captured DDP step does): the same run again
    script = tmp_path / "averaged_in_step.py"
    script.write_text(AVERAGED_IN_STEP)
    averaged = tmp_path / "averaged"
    _train([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"], averaged,
           entry=[str(script)])
    c = read_jsonl(averaged / "steps.jsonl")
    assert [r["loss"] for r in c] == pytest.approx([r["loss"] for r in a], rel=1e-4)
    assert [r["grad_norm"] for r in c] == pytest.approx([r["grad_norm"] for r in a], rel=1e-3)
    wc = load_checkpoint(averaged / "last.pt")["model_state"]
    for k in wa:
        torch.testing.assert_close(wc[k], wa[k], rtol=1e-3, atol=2e-4)


@pytest.mark.slow  # started first (tests/conftest.py)
def test_multi_label_balanced_run_on_two_gloo_processes_matches_one_process(tmp_path):
    """The weighted sampler shards one draw over the ranks, and mAP is computed over the scores
    gathered from both ranks: the same steps and the same validation mAP as one process."""
    import importlib.util

    from helix.cli import main
    from helix.training.config_io import load_config

    spec = importlib.util.spec_from_file_location("corpora", Path(__file__).parents[1] / "data" / "corpora.py")
    corpora = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(corpora)
    root, lines = tmp_path / "tags", ["path,label,split"]
    splits = ["train"] * 16 + ["validation"] * 7 + ["test"] * 7  # odd evaluation sizes on purpose
    for i, split in enumerate(splits):
        label = ("a", "b", "a;b", "a", "a")[i % 5]  # b is the rarer tag
        corpora.write_audio(root / f"{i}.wav", 0.25, 16000, freq={"a": 300, "b": 2000, "a;b": 900}[label] + 7 * i)
        lines.append(f"{i}.wav,{label},{split}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    assert main(["data", "prepare", "csv", "--root", str(root), "--csv", str(root / "labels.csv"), "--no-progress"]) == 0
    settings = ["data.name=csv", f"data.root={root}", "data.clip_seconds=0.25", "data.num_workers=0",
                "model.name=helix_raw", "model.num_layers=2", "model.overrides={d_model: 32, d_state: 4}",
                "optim.epochs=2", "optim.batch_size=4", "optim.lr=0.003", "device=cpu", "log_every_steps=1",
                "augment.enabled=false", "eval_batch_size=2", "data.balanced_sampling=true",
                "optim.class_weights=balanced"]
    (tmp_path / "cfg.yaml").write_text(load_config(None, settings).to_yaml())
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _train([sys.executable], single)
    _train_two_ranks(ddp)
    a, b = (read_jsonl(d / "steps.jsonl") for d in (single, ddp))
    assert len(a) == len(b) == 8
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], rel=1e-4)
    ma, mb = (read_jsonl(d / "metrics.jsonl") for d in (single, ddp))
    for ra, rb in zip(ma, mb):
        assert ra["val_loss"] == pytest.approx(rb["val_loss"], rel=1e-4)
        assert ra["val_map"] == pytest.approx(rb["val_map"], abs=1e-6) and ra["test_map"] == pytest.approx(rb["test_map"], abs=1e-6)
    assert json.loads((ddp / "summary.json").read_text())["metric"] == "map"


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_gpus_replay_captured_steps_like_eager_ddp(tmp_path):
    """torchrun on two GPUs (NCCL) with cuda_graphs on: the run captures (NCCL all-reduce inside the
    graph, checked at set-up) and its losses and weights match the same run with eager DDP."""
    from helix.training.config_io import load_config

    settings = [s for s in SETTINGS if not s.startswith(("device=", "data.task_kwargs="))] + [
        "device=cuda", "precision=bf16", "data.num_workers=2", "optim.epochs=3",
        "data.task_kwargs={num_train: 64, num_val: 20, num_test: 24}"]
    (tmp_path / "cfg.yaml").write_text(load_config(None, settings).to_yaml())
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    eager, graphed = tmp_path / "eager", tmp_path / "graphed"
    env = {**ENV, "HELIX_OVERRIDES": "cuda_graphs=off"}
    _train(torchrun, eager, env=env)
    proc = _train(torchrun, graphed, env={**ENV, "HELIX_OVERRIDES": "cuda_graphs=on"})
    assert "cuda_graphs: on -> on" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    a, b = (read_jsonl(d / "steps.jsonl") for d in (eager, graphed))
    assert len(a) == len(b) > 0
    torch.testing.assert_close(torch.tensor([r["loss"] for r in b]), torch.tensor([r["loss"] for r in a]),
                               rtol=2e-2, atol=2e-2)
    wa, wb = (load_checkpoint(d / "last.pt")["model_state"] for d in (eager, graphed))
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=5e-2, atol=5e-3, msg=k)
