"""Data-parallel training under ``torchrun``: process-group set-up from the environment, samplers,
and metric reduction. A single process is world size 1 and takes the same code path.

    torchrun --standalone --nproc_per_node 2 -m helix.cli train --config esc50   # 2 GPUs (NCCL)
    torchrun --standalone --nproc_per_node 2 -m helix.cli train --config demo --device cpu  # gloo
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device_kind: str) -> DistEnv:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); NCCL for CUDA, gloo for CPU.
    Without torchrun this returns world size 1 and touches nothing."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        # Import what DDP imports lazily before the group exists. Imported after it, torch 2.13
        # (torch._dynamo -> torch.distributed._tools.fake_collectives) keeps ten references to the
        # default group that are never released: destroy_process_group then cannot join gloo's
        # worker threads, they outlive the run, and one that drops a tensor while the interpreter
        # exits aborts a finished run ("terminate called without an active exception").
        import torch._dynamo  # noqa: F401
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistEnv(rank=rank, local_rank=local_rank, world_size=world)


def cleanup_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few scalars over ranks (a no-op for one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (what DDP's constructor does; a
    no-op for one process). For runs that average gradients themselves (:func:`average_gradients`)."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    with torch.no_grad():
        for tensor in module.state_dict(keep_vars=True).values():
            dist.broadcast(tensor.data, src)


def average_gradients(params, world_size: int) -> None:
    """Replace each parameter's gradient by its mean over the ranks: one all-reduce per gradient
    dtype on a flat copy, so a CUDA graph captures a single collective (DDP's bucketed hooks are
    not capturable as they stand). Parameters without a gradient (frozen) are skipped; every rank
    must have gradients for the same parameters."""
    if world_size <= 1:
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for param in params:
        if param.grad is not None:
            by_dtype.setdefault(param.grad.dtype, []).append(param.grad)
    for grads in by_dtype.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(world_size)
        for g, part in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(part.view_as(g))


def nccl_capture_problem(device: torch.device) -> str | None:
    """Check on this setup that an NCCL all-reduce captured in a CUDA graph replays with the right
    sum, on every rank -> None when it does, else why not (the same answer on every rank).

    Every rank captures, then the ranks agree (eagerly) that all captures succeeded before any
    replays, so a rank whose capture failed cannot leave the others waiting in a collective.
    """
    world, rank = dist.get_world_size(), dist.get_rank()
    problem = None
    try:
        x = torch.full((8,), float(rank + 1), device=device)
        dist.all_reduce(x.clone())  # the communicator exists before capture
        torch.cuda.synchronize(device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            y = x * 2
            dist.all_reduce(y)
    except Exception as err:  # noqa: BLE001 -- any failure means: do not capture
        problem = f"capture failed on rank {rank}: {_one_line(err)}"
    if _any_rank(problem is not None, device):
        return problem or "capture failed on another rank"
    try:
        graph.replay()
        torch.cuda.synchronize(device)
        want = float(world * (world + 1))
        if not torch.allclose(y, torch.full_like(y, want)):
            problem = f"replay on rank {rank} summed {y[0].item():g}, expected {want:g}"
    except Exception as err:  # noqa: BLE001
        problem = f"replay failed on rank {rank}: {_one_line(err)}"
    if _any_rank(problem is not None, device):
        return problem or "replay failed on another rank"
    return None


def _one_line(err: Exception) -> str:
    """``Type: first line of the message``."""
    lines = str(err).splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def _any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is true on any rank (an eager all-reduce)."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def all_gather_rows(array: np.ndarray) -> np.ndarray:
    """Concatenate every rank's ``(n_r, ...)`` array along the first axis (rank order; a no-op for
    one process). The ranks' shapes may differ in the first dimension only."""
    if not (dist.is_available() and dist.is_initialized()):
        return array
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, array)
    return np.concatenate(parts, axis=0)


class ResumableDistributedSampler(DistributedSampler):
    """DistributedSampler that can start an epoch part-way, for exact mid-epoch resumption.

    With ``drop_last=True`` every rank gets ``len(dataset) // world`` indices; rank r takes positions
    r, r + world, ... of the epoch's permutation, so the union of the ranks' i-th micro-batches is
    exactly the single-process i-th batch of the same global size.
    """

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed,
                         drop_last=True)
        self.start_index = 0

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:
        super().set_epoch(epoch)
        self.start_index = start_index

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.start_index:])

    def __len__(self) -> int:
        return self.num_samples - self.start_index


class ResumableWeightedSampler(Sampler[int]):
    """Weighted draws with replacement (class-balanced sampling), sharded and resumable like
    :class:`ResumableDistributedSampler`.

    An epoch draws ``world * (N // world)`` indices from ``weights`` (N,) with a generator seeded by
    (seed, epoch), the same on every rank; rank r takes positions r, r + world, ... of that draw, so
    the ranks' i-th micro-batches together are the single-process i-th batch, and ``start_index``
    skips what a resumed epoch has already consumed.
    """

    def __init__(self, weights, num_replicas: int, rank: int, seed: int):
        self.weights = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        if self.weights.ndim != 1 or len(self.weights) == 0 or not bool((self.weights >= 0).all()) \
                or not float(self.weights.sum()) > 0:
            raise ValueError("sampling weights must be a non-empty (N,) array of non-negative numbers, not all 0")
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        self.num_samples = len(self.weights) // num_replicas
        self.epoch, self.start_index = 0, 0

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:
        self.epoch, self.start_index = epoch, start_index

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        draws = torch.multinomial(self.weights, self.num_samples * self.num_replicas, replacement=True, generator=g)
        return iter(draws[self.rank::self.num_replicas].tolist()[self.start_index:])

    def __len__(self) -> int:
        return self.num_samples - self.start_index


class ShardSampler(Sampler[int]):
    """Evaluation order: rank r reads indices r, r + world, ... without padding, so summed counts
    over ranks are exact (DistributedSampler would repeat examples to even out the shards)."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1):
        self.indices = range(rank, size, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
