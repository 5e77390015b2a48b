"""Ctrl-C is never lost and never cuts a checkpoint (utils/interrupts.py), in-process with real SIGINTs."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from helix.utils.interrupts import check_interrupt, handling_interrupts, interrupts_deferred

pytestmark = pytest.mark.usefixtures("terminal_sigint")  # tests/conftest.py


def _ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)  # interrupted by the handler's KeyboardInterrupt when it raises


class _InterruptedFinalizer:
    def __del__(self):  # a KeyboardInterrupt raised in here is printed and dropped by Python
        _ctrl_c()


def test_a_ctrl_c_dropped_in_a_finalizer_is_raised_at_the_next_check(monkeypatch):
    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", dropped.append)  # where "Exception ignored in ..." goes
    with handling_interrupts():
        _InterruptedFinalizer()  # freed at once: the SIGINT lands inside __del__
        assert [type(u.exc_value) for u in dropped] == [KeyboardInterrupt]
        with pytest.raises(KeyboardInterrupt):
            check_interrupt()
        check_interrupt()  # raised once


def test_a_ctrl_c_inside_a_deferred_block_takes_effect_when_it_ends():
    finished = False
    with handling_interrupts():
        with pytest.raises(KeyboardInterrupt):
            with interrupts_deferred():
                _ctrl_c()
                finished = True  # the block runs to its end
    assert finished


def test_a_ctrl_c_outside_deferred_blocks_still_stops_at_once():
    with handling_interrupts(), pytest.raises(KeyboardInterrupt):
        _ctrl_c()
        pytest.fail("the SIGINT did not interrupt")


def test_without_the_handler_sigint_is_pythons_own():
    """helix as a library: nothing is installed, deferral does not hold a Ctrl-C back."""
    check_interrupt()
    with pytest.raises(KeyboardInterrupt), interrupts_deferred():
        _ctrl_c()
        pytest.fail("the SIGINT did not interrupt")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_process_that_ignores_sigint_keeps_ignoring_it():
    """A background job (``cmd &`` in a script) starts with SIGINT ignored; helix leaves it so."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with handling_interrupts():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        with interrupts_deferred():
            _ctrl_c()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
