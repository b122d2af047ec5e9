"""A request's deadline: the time left to each socket call, and the watchdog that ends it."""

from __future__ import annotations

import socket
import time
from datetime import timedelta

import httpcore
import pytest

from worker.wiraya.deadline import RequestClock, Watchdog, request_ends_at


def test_the_request_ends_at_the_earlier_of_its_deadline_and_the_timeout() -> None:
    timeout = timedelta(seconds=30)

    assert request_ends_at(100.0, timeout, None) == 130.0
    assert request_ends_at(100.0, timeout, 110.0) == 110.0
    assert request_ends_at(100.0, timeout, 500.0) == 130.0


def test_each_socket_call_gets_at_most_the_time_left() -> None:
    clock = RequestClock(time.monotonic() + 5.0)

    assert clock.left(1.0, httpcore.ReadTimeout) == 1.0
    assert 4.0 < clock.left(30.0, httpcore.ReadTimeout) <= 5.0
    assert 4.0 < clock.left(None, httpcore.ReadTimeout) <= 5.0


def test_past_the_deadline_no_socket_call_starts() -> None:
    clock = RequestClock(time.monotonic() - 0.001)

    with pytest.raises(httpcore.WriteTimeout, match="deadline"):
        clock.left(30.0, httpcore.WriteTimeout)


def test_the_watchdog_shuts_a_blocked_socket_down_at_its_deadline() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        clock = RequestClock(time.monotonic() + 0.2)
        Watchdog().watch(clock)
        clock.attach(ours)
        ours.settimeout(30)  # only the watchdog can end this wait early

        assert ours.recv(10) == b""  # shut down: the blocked read returns at once
        assert clock.expired


def test_a_finished_request_is_never_touched() -> None:
    watchdog = Watchdog()
    done_ours, done_theirs = socket.socketpair()
    late_ours, late_theirs = socket.socketpair()
    with done_ours, done_theirs, late_ours, late_theirs:
        done = RequestClock(time.monotonic() + 0.05)
        late = RequestClock(time.monotonic() + 0.3)  # due after `done`: a witness
        watchdog.watch(done)
        watchdog.watch(late)
        done.attach(done_ours)
        late.attach(late_ours)
        done.finish()
        late_ours.settimeout(30)

        assert late_ours.recv(10) == b""  # the watchdog has passed `done`'s deadline too
        done_theirs.sendall(b"still open")
        assert done_ours.recv(10) == b"still open"
        assert not done.expired


def test_a_socket_attached_after_the_deadline_is_shut_at_once() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        clock = RequestClock(time.monotonic() + 0.05)
        Watchdog().watch(clock)
        while not clock.expired:
            time.sleep(0.01)

        clock.attach(ours)
        ours.settimeout(30)

        assert ours.recv(10) == b""
