"""CUDA-graph captured steps: when to capture (``TrainConfig.cuda_graphs``) and a replaying wrapper.

Short clips make a step launch-bound (issue 13: ~2,000 launches, 33% GPU busy at 1 s, B=32); one
graph replay per step removes the per-launch CPU cost. A graph replays fixed kernels on fixed
buffers, so it is keyed by everything that picks kernels or shapes on the CPU side: every input's
shape and dtype, and which optional inputs are absent (``lengths=None`` takes the unmasked path).

:func:`resolve_cuda_graphs` turns ``auto | on | off`` into a decision with its reason (for the log);
:class:`CapturedStep` runs a step function eagerly for its first calls per key (warm-up: lazy
initialisation, autotuning, allocator growth), then captures it once and replays it. Every call,
warm-up and capture included, performs exactly one step on its own inputs, so N calls through it
equal N eager calls (the step must keep its state in tensors: a capturable optimizer, a device-side
non-finite guard, no ``.item()``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CUDA_GRAPHS = ("auto", "on", "off")
AUTO_MAX_CLIP_SECONDS = 30.0
"""``auto`` captures clips up to this long. Longer clips make a kernel-bound step (300 s: ~340 ms
of kernels per step, launches negligible), and a graph keeps its own memory pool beside the
allocator's cache, so capture there would cost memory for no time."""


@dataclass(frozen=True)
class GraphDecision:
    enabled: bool
    """Whether steps are captured and replayed."""
    reason: str
    """One line for the log saying why."""


def resolve_cuda_graphs(setting: str, device: torch.device | str, *, shapes_repeat: bool, world_size: int = 1,
                        nccl_capture_verified: bool = False, clip_seconds: float | None = None,
                        unsupported: str | None = None, nccl_problem: str | None = None) -> GraphDecision:
    """Decide whether to capture the step.

    setting: ``auto`` (capture on CUDA when batch shapes repeat; single process, or DDP once NCCL
    inside graphs is verified on this setup: :func:`helix.core.distributed.nccl_capture_problem`),
    ``on`` (the same conditions, but a CPU device or non-repeating shapes is a configuration
    error), ``off``. shapes_repeat: batches come in a bounded set of shapes
    (fixed-length crops, or length buckets), so each graph is replayed many times. world_size > 1
    without ``nccl_capture_verified`` falls back to eager with a message, whatever the setting
    (``nccl_problem``: what the check found, for that message).
    clip_seconds: ``auto`` stays off above :data:`AUTO_MAX_CLIP_SECONDS`. unsupported: why this run's
    step cannot be captured (e.g. fp16 loss scaling reads the host), or None.
    ValueError for an unknown setting or an impossible ``on``.
    """
    if setting not in CUDA_GRAPHS:
        raise ValueError(f"cuda_graphs must be one of {CUDA_GRAPHS}, got {setting!r}")
    if setting == "off":
        return GraphDecision(False, "cuda_graphs: off")
    if unsupported:
        if setting == "on":
            raise ValueError(f"cuda_graphs: on cannot capture this run: {unsupported}; use auto or off")
        return GraphDecision(False, f"cuda_graphs: auto -> off ({unsupported})")
    if torch.device(device).type != "cuda":
        if setting == "on":
            raise ValueError(f"cuda_graphs: on needs a CUDA device, got {torch.device(device)}; use auto or off")
        return GraphDecision(False, f"cuda_graphs: auto -> off (device {torch.device(device)} is not CUDA)")
    if not shapes_repeat:
        if setting == "on":
            raise ValueError("cuda_graphs: on needs batches of repeating shapes (fixed-length crops or length "
                             "buckets); every batch would capture a new graph")
        return GraphDecision(False, "cuda_graphs: auto -> off (batch shapes do not repeat)")
    if setting == "auto" and clip_seconds is not None and clip_seconds > AUTO_MAX_CLIP_SECONDS:
        return GraphDecision(False, f"cuda_graphs: auto -> off ({clip_seconds:g} s clips: the step is kernel-bound; "
                                    "cuda_graphs=on captures anyway)")
    if world_size > 1 and not nccl_capture_verified:
        why = f": {nccl_problem}" if nccl_problem else ""
        return GraphDecision(False, f"cuda_graphs: {setting} -> off (DDP with {world_size} processes: NCCL "
                                    f"inside CUDA graphs is not verified on this setup{why}; running eagerly)")
    ddp = (f"; DDP with {world_size} processes: gradients averaged by one NCCL all-reduce inside the graph"
           if world_size > 1 else "")
    return GraphDecision(True, f"cuda_graphs: {setting} -> on (one graph per batch shape{ddp})")


def graph_key(*inputs) -> tuple:
    """What a captured graph is specific to: each input's shape and dtype, None for an absent one,
    the value of a non-tensor input (flags that pick a path)."""
    return tuple((tuple(x.shape), x.dtype, x.device) if isinstance(x, torch.Tensor) else ("value", x)
                 for x in inputs)


class CapturedStep:
    """``fn(*inputs) -> tensor or tuple of tensors``, replayed from one CUDA graph per :func:`graph_key`.

    The first ``warmup`` calls of a key run eagerly on a side stream; the next one copies its inputs
    into static buffers, captures ``fn`` on them and replays the graph; later calls copy and replay.
    Returned tensors are the graph's static outputs, overwritten by the next replay of the same key:
    clone what must outlive it. Each graph has its own memory pool: a shared pool is safe only when
    graphs replay in capture order, which bucketed batches do not.
    """

    def __init__(self, fn, warmup: int = 3):
        if warmup < 1:
            raise ValueError(f"warmup must be at least 1 (lazy initialisation must not be captured), got {warmup}")
        self.fn, self.warmup = fn, warmup
        self.calls: dict[tuple, int] = {}
        self.graphs: dict[tuple, tuple] = {}  # key -> (graph, static inputs, static outputs)
        self.captured = 0
        """Graphs captured so far (:meth:`release` keeps the count)."""

    def __call__(self, *inputs):
        key = graph_key(*inputs)
        if key in self.graphs:
            graph, static_in, static_out = self.graphs[key]
            for buf, x in zip(static_in, inputs):
                if isinstance(buf, torch.Tensor):
                    buf.copy_(x, non_blocking=True)
            graph.replay()
            return static_out
        n = self.calls.get(key, 0)
        self.calls[key] = n + 1
        if n < self.warmup:
            return self._side_stream(self.fn, *inputs)
        return self._capture(key, inputs)

    @staticmethod
    def _side_stream(fn, *inputs):
        """Warm-up off the default stream, as capture will be (the caching allocator keeps per-stream pools)."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            out = fn(*inputs)
        torch.cuda.current_stream().wait_stream(stream)
        return out

    def _capture(self, key, inputs):
        static_in = tuple(x.clone() if isinstance(x, torch.Tensor) else x for x in inputs)
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize()
        # thread-local: the DataLoader's pin-memory thread keeps allocating pinned host memory while
        # the step is captured, which the default (global) mode counts as an illegal call
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            static_out = self.fn(*static_in)
        self.graphs[key] = (graph, static_in, static_out)
        self.captured += 1
        graph.replay()  # capture records without running: this call's step happens here
        return static_out

    def release(self) -> None:
        """Free the graphs and their memory pools once the device is done with them. Under DDP this
        must happen before the process group is destroyed: a live graph holding NCCL kernels keeps
        ``destroy_process_group`` waiting (seen on two H200s, torch 2.11). A later call captures anew."""
        if self.graphs:
            torch.cuda.synchronize()
        self.graphs.clear()
        self.calls.clear()
