"""``RunLogger.close`` (``core/rundir.py``): TensorBoard's writer closes fully when it can, and a writer whose
thread cannot be reached does not keep the run from exiting (a Ctrl-C inside the writer's queue once left a
run waiting on it for more than a minute; tests/training/test_runfolder.py)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from helix.core.rundir import RunLogger

pytest.importorskip("tensorboard")


def _close_in_thread(logger, **kwargs) -> threading.Thread:
    done = threading.Thread(target=logger.close, kwargs=kwargs, daemon=True)
    done.start()
    return done


def test_close_flushes_and_ends_the_writer_thread(tmp_path):
    logger = RunLogger(tmp_path, enabled=True)
    logger.tb.add_scalar("loss", 1.5, 0)
    worker = logger.tb.file_writer.event_writer._async_writer._worker
    logger.close()
    assert not worker.is_alive()
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    assert logger.tb is None  # closed: nothing is written to it again
    assert not (tmp_path / "events.jsonl").exists()


def test_a_writer_that_cannot_be_reached_costs_the_timeout_not_the_exit(tmp_path):
    logger = RunLogger(tmp_path, enabled=True)
    logger.tb.add_scalar("loss", 1.5, 0)
    queue = logger.tb.file_writer.event_writer._async_writer._byte_queue
    with queue.mutex:  # the writer's queue held by someone else: its stop signal cannot be delivered
        start = time.perf_counter()
        closing = _close_in_thread(logger, timeout=0.5)
        closing.join(10)
        stuck = closing.is_alive()
        seconds = time.perf_counter() - start
    closing.join(10)  # (released: the writer finishes either way)
    assert not stuck, "RunLogger.close waited on a writer thread that could not finish"
    assert 0.4 < seconds < 5
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["tensorboard_close_timeout"]
