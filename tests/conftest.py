"""Fixtures shared across the test folders."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """One intra-op thread per test process: the models in these tests are tiny, and under
    ``pytest -n 2`` on two cores two multi-threaded pools thrash each other (10x slower, measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def terminal_sigint():
    """SIGINT as a command started from a terminal has it (Python's handler). A background job
    (``make test &`` from a script) hands its children SIGINT ignored, and Ctrl-C could not be tested."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` start first, so that under ``pytest -n 2`` they overlap the many short
    tests instead of one of them running alone at the end; ``slow(seconds=...)`` (CPU seconds,
    default 20) deals them out longest first to the least-loaded worker, so the two
    documented-command sessions (minutes each) never queue on one worker.

    xdist's load scheduler gives worker k the k-th block of ``chunk`` consecutive items first (its
    initial distribution); each block here starts with that worker's share of the slow tests.
    Without xdist the slow tests simply come first. Every test still runs exactly once.
    """
    def seconds(item):
        return item.get_closest_marker("slow").kwargs.get("seconds", 20)

    slow = sorted((item for item in items if item.get_closest_marker("slow")), key=seconds, reverse=True)
    if not slow:
        return
    rest = iter([item for item in items if not item.get_closest_marker("slow")])
    workers = getattr(config, "workerinput", {}).get("workercount", 1)
    shares, load = [[] for _ in range(workers)], [0] * workers
    for item in slow:
        k = load.index(min(load))
        shares[k].append(item)
        load[k] += seconds(item)
    chunk = max(2, len(items) // workers // 4)
    ordered = []
    for share in shares:
        # shortest first within a worker's share: the second documented-command session then starts
        # after the first has built the wheel both share, instead of waiting on its lock
        share.reverse()
        ordered += share + [item for _, item in zip(range(chunk - len(share)), rest)]
    ordered += list(rest)
    assert len(ordered) == len(items)
    items[:] = ordered
