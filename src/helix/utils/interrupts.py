"""Ctrl-C that always stops a run, and never in the middle of a checkpoint.

Python turns SIGINT into ``KeyboardInterrupt`` wherever the main thread happens to be. Two places
lose it: a finalizer (``__del__``, a weakref callback), where the interpreter prints "Exception
ignored" and carries on, and a C++ writer such as ``torch.save``, which reports its own error
instead ("unexpected pos ..."). Both were seen with ``helix train``: a run that kept training
after Ctrl-C, and a Ctrl-C during a checkpoint that ended as an error rather than an interrupt.

:func:`handling_interrupts` (installed by the command line) records every SIGINT and raises as
before; :func:`check_interrupt`, called by the training loop once per step, raises one that
nothing acted on; inside :func:`interrupts_deferred` (around checkpoint writes) a SIGINT only
takes effect when the block ends, so the file is written whole and the run ends as interrupted.
Without the handler installed (helix used as a library) these are no-ops.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

_pending = False
_deferring = 0
_installed = False


def _on_sigint(signum, frame) -> None:
    global _pending
    _pending = True
    if not _deferring:
        raise KeyboardInterrupt


@contextlib.contextmanager
def handling_interrupts() -> Iterator[None]:
    """Route SIGINT through this module for the block. Only where Python's own handler is in place, in
    the main thread: a process that ignores SIGINT (a background job started by a script) or has
    its own handler keeps it."""
    global _pending, _installed
    if (threading.current_thread() is not threading.main_thread() or _installed
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    previous = signal.signal(signal.SIGINT, _on_sigint)
    _pending, _installed = False, True
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _pending, _installed = False, False


def check_interrupt() -> None:
    """Raise ``KeyboardInterrupt`` for a Ctrl-C that arrived and was not acted on (or was deferred)."""
    global _pending
    if _pending and not _deferring:
        _pending = False
        raise KeyboardInterrupt


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """A Ctrl-C inside the block takes effect when it ends (only while :func:`handling_interrupts`
    is active; otherwise SIGINT behaves as usual)."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    check_interrupt()
