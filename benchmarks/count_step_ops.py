"""Which operations a training step issues, and from where: every ATen call of one step (forward,
mixup loss, backward, top-1 hits, gradient clipping, fused AdamW), counted by operation and by the
line of helix (or torch) code that issued it. On a GPU each such call is (at least) one kernel, so
this is the CPU-side census of the ~1,000 kernels a captured short step replays (RESULTS.md
section 11): it needs no GPU, and runs the Triton kernels through Triton's interpreter.

    TRITON_INTERPRET=1 .venv/bin/python benchmarks/count_step_ops.py --model pure_mamba_mel
    TRITON_INTERPRET=1 .venv/bin/python benchmarks/count_step_ops.py --model helix_raw --ops copy_ cat fill_

The step is :class:`helix.training.step.GraphedSteps` (what the graph captures) run eagerly on the
trainer built from the model's real config (6 layers) with small sizes: B=2, a 1 s clip, d_model 32,
d_state 4, so the interpreter finishes in a minute or two. The counts depend on the layer structure, not on B, the width or the clip
length (``lean_blocks: auto`` keeps every activation at these sizes, as at 5 s with B=32).
Operations the Triton interpreter issues itself (copies of kernel arguments) are left out.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import traceback
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# view and metadata operations launch no kernel on a GPU
NO_KERNEL = {"view", "_unsafe_view", "reshape", "expand", "permute", "transpose", "t", "select", "slice",
             "unsqueeze", "squeeze", "as_strided", "detach", "alias", "split", "split_with_sizes", "unbind",
             "chunk", "narrow", "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided",
             "_reshape_alias", "lift_fresh", "diagonal", "unfold", "_local_scalar_dense", "is_nonzero",
             "view_as", "flatten", "movedim", "numpy_T", "set_", "resize_", "_to_copy_view",
             "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "dim", "size", "stride"}


def call_site() -> str:
    """The innermost frame of helix code (else of torch) that led to the current operation."""
    frames = traceback.extract_stack()[:-3]
    for frame in reversed(frames):
        if "/helix/" in frame.filename and "count_step_ops" not in frame.filename:
            return f"{frame.filename.split('/helix/', 1)[1]}:{frame.lineno} {frame.name}"
    for frame in reversed(frames):
        if "/torch/" in frame.filename and "_python_dispatch" not in frame.filename:
            return f"torch/{frame.filename.split('/torch/', 1)[1]}:{frame.lineno} {frame.name}"
    return "?"


class Census(TorchDispatchMode):
    """Counts kernel-launching ATen calls by (operation, call site)."""

    def __init__(self):
        super().__init__()
        self.calls: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in NO_KERNEL and not any("/triton/" in f.filename for f in traceback.extract_stack()[-12:-1]):
            self.calls[(name, call_site())] += 1
        return func(*args, **(kwargs or {}))


def build(model: str, seconds: float, batch: int, width: int, tmp: Path):
    from helix.training.config_io import load_config
    from helix.training.loaders import RunData
    from helix.training.loop import Trainer

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_loop_overhead import CLASSES, MemoryClips

    cfg = load_config(None, [f"model.name={model}", f"optim.batch_size={batch}", "optim.epochs=1",
                             f"data.clip_seconds={seconds}", "data.num_workers=0", "device=cpu",
                             f"model.overrides={{scan_backend: triton, d_model: {width}, d_state: 4}}",
                             f"out_dir={tmp}"])
    data = RunData(MemoryClips(batch * 4, seconds), MemoryClips(batch, seconds, 1), MemoryClips(batch, seconds, 2),
                   [str(i) for i in range(CLASSES)], "synthetic")
    trainer = Trainer(cfg, data=data, verbose=False)
    trainer.setup()
    return trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="pure_mamba_mel")
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--width", type=int, default=32, help="d_model (d_state is 4): the interpreter is slow at full width")
    p.add_argument("--ops", nargs="*", default=None, help="list call sites of these operations only")
    p.add_argument("--top", type=int, default=40)
    args = p.parse_args()
    if os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("set TRITON_INTERPRET=1 (the Triton kernels run through the interpreter on CPU)")
    import tempfile

    from helix.training.loaders import start_epoch
    from helix.training.step import GraphedSteps

    with tempfile.TemporaryDirectory() as tmp:
        trainer = build(args.model, args.seconds, args.batch, args.width, Path(tmp) / "run")
        steps = GraphedSteps(trainer.step_parts, capture=False)
        start_epoch(trainer.train_loader, trainer.cfg.seed, 0, 0, 0)
        batches = iter(trainer.train_loader)
        steps(batches, 0)  # warm-up: lazy state (AdamW's moments) is created here
        # what the graph holds: the step function on the drawn micro-batch
        from helix.frontends.checks import check_lengths
        from helix.training.step import draw_micro_batch

        m = draw_micro_batch(trainer.step_parts, next(batches), 1, 0)
        lengths = check_lengths(m.lengths, m.wave, trainer.raw_model.min_samples, "model input")
        lam = torch.tensor([m.lam, 1.0 - m.lam])
        census = Census()
        with census:
            steps._step(m.wave, m.labels, m.labels_b, lam, m.hit_labels, lengths)
    by_op = collections.Counter()
    for (op, _), n in census.calls.items():
        by_op[op] += n
    total = sum(by_op.values())
    print(f"{args.model}, B={args.batch}, {args.seconds:g} s: {total} kernel-launching ATen calls in one step\n")
    print("| operation | calls |\n|---|---:|")
    for op, n in by_op.most_common(args.top):
        print(f"| {op} | {n} |")
    print("\n| operation | call site | calls |\n|---|---|---:|")
    rows = [(k, n) for k, n in census.calls.items() if args.ops is None or k[0] in args.ops]
    for (op, site), n in sorted(rows, key=lambda r: -r[1])[:args.top]:
        print(f"| {op} | {site} | {n} |")


if __name__ == "__main__":
    main()
