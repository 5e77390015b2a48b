"""Mixed precision on a GPU (skipped without one): bf16 autocast and fp16 with loss scaling keep
fp32 parameters, train to finite losses, and an fp16 run interrupted by a crash resumes with its
loss-scaler state."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helix.models.checkpoint import load_checkpoint
from helix.training.loaders import build_run_data
from helix.training.loop import Trainer
from helix.core.rundir import read_jsonl

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


class _CrashAfter(torch.utils.data.Dataset):
    """A deterministic crash: raises once ``after`` items have been read."""

    def __init__(self, base, after):
        self.base, self.after, self.reads = base, after, 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        self.reads += 1
        if self.reads > self.after:
            raise RuntimeError("simulated crash")
        return self.base[i]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_with_fp32_parameters(tiny, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("no bf16 on this GPU")
    cfg = tiny("device=cuda", f"precision={precision}", "checkpoint_every_steps=2", out=precision)
    trainer = Trainer(cfg, verbose=False)
    trainer.fit()
    assert all(p.dtype == torch.float32 for p in trainer.raw_model.parameters())
    losses = [r["loss"] for r in read_jsonl(Path(cfg.out_dir) / "steps.jsonl")]
    assert len(losses) == 12 and all(torch.isfinite(torch.tensor(losses)))
    last = load_checkpoint(Path(cfg.out_dir) / "last.pt")
    assert (last["scaler_state"] is not None) == (precision == "fp16")


def test_fp16_resume_after_a_crash_continues_the_run(tiny):
    whole = tiny("device=cuda", "precision=fp16", "checkpoint_every_steps=2", out="whole")
    Trainer(whole, verbose=False).fit()
    crashed = tiny("device=cuda", "precision=fp16", "checkpoint_every_steps=2", out="crashed")
    data = build_run_data(crashed.data)
    data.train = _CrashAfter(data.train, after=8 * 9)  # dies while reading step 10's batch
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(crashed, data=data, verbose=False).fit()
    assert load_checkpoint(Path(crashed.out_dir) / "last.pt")["step"] == 8
    Trainer(crashed, resume=True, verbose=False).fit()
    a, b = (read_jsonl(Path(c.out_dir) / "steps.jsonl") for c in (whole, crashed))
    assert [r["step"] for r in b] == list(range(1, 13))
    # GPU kernels may reduce in a different order from run to run: equal up to rounding
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], rel=1e-2)


def test_step_stats_hold_the_values_of_their_step():
    """The non-blocking copy is queued with the step: values the device overwrites afterwards (the
    next step's) do not reach it, and reading it waits for its own step only."""
    from helix.training.loop import StepStats

    x = torch.tensor([1.5, 2.0, 3.0], device="cuda")
    stats = StepStats(x)
    x.fill_(7.0)
    torch.cuda._sleep(10_000_000)  # a long kernel queued after the copy: reading does not wait for it
    assert stats.tolist() == [1.5, 2.0, 3.0]
    assert not torch.cuda.current_stream().query()
    torch.cuda.synchronize()


def test_uploads_on_the_copy_stream_reach_the_compute_stream_in_order():
    """A batch copied on the side stream is complete for the kernels queued after it on the compute
    stream, even behind a long kernel, and the copy itself did not wait for that kernel."""
    from helix.training.step import _COPY_STREAMS, upload

    host = (torch.arange(1 << 20) % 7).pin_memory()  # int64: sums compare exactly
    # one upload first, so the copy stream's block is cached: a fresh cudaMalloc can synchronize the
    # device (the likely reason the first version of this test failed on the H200); a training loop's
    # steady state allocates from the cache
    (warm,) = upload(torch.device("cuda"), host)
    del warm
    torch.cuda.synchronize()
    torch.cuda._sleep(10_000_000)  # the compute stream is busy for ~5 ms
    (dev,) = upload(torch.device("cuda"), host)
    _COPY_STREAMS[torch.device("cuda")].synchronize()
    assert not torch.cuda.current_stream().query()  # the copy is done, the sleep still runs
    assert dev.sum().item() == float(host.sum())
