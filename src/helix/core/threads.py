"""How many intra-op threads a CPU training run uses.

PyTorch starts one intra-op thread per core. For the small models of the demo and the tests that
is the slow choice: each op is a few thousand elements, and the threads spend their time
synchronising (and spinning, fighting whatever else runs on the cores: DataLoader workers, other
trainings, other users). Measured on a 2-core machine with other work running, a 1-epoch
``helix train --config demo`` took 173 s with PyTorch's default of 2 threads and 19 s with one
(docs/training.md). Large models do gain from threads, as long as the cores are otherwise free.
"""

from __future__ import annotations

import os

import torch

SMALL_ACTIVATION = 1 << 18
"""Below this many elements in one layer's activations (micro-batch x tokens x width), one thread."""


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. under ``taskset`` or a container)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


GPU_LOADER_WORKERS_MAX = 8
"""Loader workers per rank on a GPU: enough for ~2,500 one-second clips/s (an H200 at 12.8 ms per
captured B=32 step, ``benchmarks/RESULTS.md`` section 8), and no more processes than that needs."""


def default_loader_workers(device_type: str, local_world_size: int = 1, cores: int | None = None) -> tuple[int, str]:
    """DataLoader workers per rank when ``data.num_workers`` is null -> (workers, why).

    GPU runs: the cores each rank may use, less one for the process itself, at most
    :data:`GPU_LOADER_WORKERS_MAX` (decoding must never starve a short-clip step). CPU runs: the
    model wants the cores, so at most 2 workers, and none on a single core."""
    cores = usable_cores() if cores is None else cores
    per_rank = max(cores // max(local_world_size, 1), 1)
    if device_type == "cuda":
        n = min(GPU_LOADER_WORKERS_MAX, per_rank - 1)
    else:
        n = min(2, per_rank - 1)
    n = max(n, 0)
    return n, f"{n} loader worker(s) per process ({per_rank} core(s) per process, {device_type}; data.num_workers=N to change)"


def busy_cores() -> int:
    """Cores kept busy by other processes, from the 1-minute load average (0 where unknown)."""
    try:
        return int(os.getloadavg()[0] + 0.5)
    except (AttributeError, OSError):
        return 0


def auto_cpu_threads(activation_elements: int, num_workers: int, local_world_size: int = 1) -> int:
    """The thread count for a CPU run: 1 for small models, else this rank's share of the cores,
    less its DataLoader workers and the cores other processes keep busy; at least 1."""
    if activation_elements < SMALL_ACTIVATION:
        return 1
    share = usable_cores() // max(local_world_size, 1)
    idle = usable_cores() - busy_cores()
    return max(1, min(share - num_workers, idle))


def choose_cpu_threads(requested: int | None, activation_elements: int, num_workers: int,
                       local_world_size: int = 1) -> tuple[int | None, str]:
    """``(threads to set or None to keep PyTorch's, reason)``: an explicit request wins, then
    ``OMP_NUM_THREADS`` (torchrun sets it to 1 for several processes), then :func:`auto_cpu_threads`."""
    if requested is not None:
        return requested, "cpu_threads / --threads"
    if os.environ.get("OMP_NUM_THREADS"):
        return None, "OMP_NUM_THREADS"
    return auto_cpu_threads(activation_elements, num_workers, local_world_size), "auto; --threads N to change"


def set_cpu_threads(threads: int | None) -> int:
    """Set PyTorch's intra-op threads (None keeps them) -> the previous count, for restoring."""
    before = torch.get_num_threads()
    if threads is not None and threads != before:
        torch.set_num_threads(threads)
    return before
