"""The admission gate shared by the API and the UI: bounded running and waiting requests."""

from __future__ import annotations

import threading
import time

import pytest

from sam3studio.service import AdmissionGate, Cancelled, Overloaded


def _wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def _waiter(gate, results, cancelled=None):
    try:
        with gate.admit(cancelled):
            results.append("ran")
    except (Overloaded, Cancelled) as exc:
        results.append(type(exc).__name__)


def test_queue_never_exceeds_its_bound_even_when_a_slot_was_just_freed():
    """A freed slot not yet claimed by its woken waiter must not let a newcomer grow the queue past max_queue
    (the load run in docs/reliability.md once saw 9 waiting with a bound of 8)."""
    gate = AdmissionGate(max_concurrent=1, max_queue=1, timeout=10)
    results: list[str] = []
    with gate._cond:  # hold the lock: the woken waiter cannot claim the slot yet (the lock is re-entrant)
        with gate.admit():
            thread = threading.Thread(target=_waiter, args=(gate, results))
            thread.start()
            gate._cond.wait_for(lambda: gate.waiting == 1, timeout=5)
        assert (gate.active, gate.waiting) == (0, 1)  # slot freed, waiter not yet running
        with pytest.raises(Overloaded):
            with gate.admit():
                pass
        assert gate.peak_waiting == 1
    thread.join(5)
    assert results == ["ran"]


def test_requests_beyond_running_plus_queue_are_refused_at_once():
    gate = AdmissionGate(max_concurrent=2, max_queue=2, timeout=10)
    release = threading.Event()
    results: list[str] = []

    def holder():
        with gate.admit():
            release.wait(5)

    holders = [threading.Thread(target=holder) for _ in range(2)]
    for t in holders:
        t.start()
    _wait_until(lambda: gate.active == 2)
    waiters = [threading.Thread(target=_waiter, args=(gate, results)) for _ in range(2)]
    for t in waiters:
        t.start()
    _wait_until(lambda: gate.waiting == 2)
    waits: list[str] = []
    real_wait = gate._cond.wait
    me = threading.current_thread()

    def counting_wait(*args, **kwargs):
        if threading.current_thread() is me:
            waits.append("waited")
        return real_wait(*args, **kwargs)

    gate._cond.wait = counting_wait
    with pytest.raises(Overloaded) as info:
        with gate.admit():
            pass
    assert waits == [] and info.value.retry_after >= 1  # refused at once: it never waited for a slot
    release.set()
    for t in holders + waiters:
        t.join(5)
    assert results == ["ran", "ran"] and (gate.active, gate.waiting) == (0, 0)


def test_waiting_times_out_and_cancelled_waiters_leave():
    gate = AdmissionGate(max_concurrent=1, max_queue=4, timeout=0.3)
    results: list[str] = []
    gone = threading.Event()
    with gate.admit():
        _waiter(gate, results)  # times out
        thread = threading.Thread(target=_waiter, args=(gate, results, gone.is_set))
        thread.start()
        _wait_until(lambda: gate.waiting == 1)
        gone.set()
        thread.join(5)
    assert results == ["Overloaded", "Cancelled"] and gate.waiting == 0
