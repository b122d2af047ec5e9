"""A refused key's alarm against what the gate enforces: the alarm (stats, metrics) ends at an
answer under another key, but the refused key itself stays held to its own slow retry."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine

from sandbox.testing import running_sandbox
from tests.integration.dispatch.harness import Outbox
from worker.api_keys import key_fingerprint
from worker.dispatch import gate as gates
from worker.dispatch.gate import transitions
from worker.dispatch.gate.readout import GateState, read_gate

KEY_RETRY = timedelta(seconds=300)  # the default OUTBOX_REFUSED_KEY_RETRY_SECONDS


def alarmed_keys(outbox: Outbox) -> int:
    with outbox.engine.connect() as connection:
        view = read_gate(connection)
    return GateState.of(view, now=outbox.clock.now, circuit_failures=3).refused_keys


def test_an_answer_under_a_new_key_ends_the_alarm_but_the_old_key_keeps_its_slow_retry(
    engine: Engine,
) -> None:
    with running_sandbox(api_key="right-key") as sandbox:
        outbox = Outbox(engine, sandbox)
        try:
            outbox.enqueue_ordinary(3)
            wrong = outbox.dispatcher(WIRAYA_API_KEY="wrong-key")
            assert wrong.dispatch_once().state == "alarm"
            assert alarmed_keys(outbox) == 1
            outbox.clock.advance(1)
            right = outbox.dispatcher(WIRAYA_API_KEY="right-key")
            assert sum(s.accepted for s in outbox.drain(right)) == 3
            assert alarmed_keys(outbox) == 0  # the alarm ends without `outbox resume`

            # What the gate enforces for a worker still holding the refused key is unchanged:
            # nothing before its retry interval, then one request.
            outbox.enqueue_ordinary(3)
            requests = sandbox.request_count
            outbox.clock.advance(KEY_RETRY.total_seconds() / 2)
            assert wrong.dispatch_once().state == "paused"
            assert sandbox.request_count == requests
            outbox.clock.advance(KEY_RETRY.total_seconds())
            assert wrong.dispatch_once().state == "alarm"  # its one retry, refused again
            assert sandbox.request_count == requests + 1
            assert wrong.dispatch_once().state == "paused"
            assert sandbox.request_count == requests + 1
        finally:
            outbox.close()


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="the gate notes when an answer came, not when its request started: an answer to a "
    "request made before the refusal ends the alarm until the key's next retry is refused",
)
def test_an_answer_to_a_request_older_than_the_refusal_leaves_the_alarm_on(
    outbox: Outbox,
) -> None:
    salt = outbox.settings().fingerprint_salt
    fingerprint = key_fingerprint("the-only-key", salt)
    started, refused = outbox.clock.now, outbox.clock.advance(1)
    with outbox.engine.begin() as connection:
        gates.read(connection, fingerprint)
        transitions.refuse_key_unless_cleared_since(
            connection,
            fingerprint=fingerprint,
            status=401,
            reason="Unauthorized: HTTP 401",
            started=refused,
            now=refused,
            probe_at=refused + KEY_RETRY,
        )
        # A request with the same key, sent before the key was revoked, answered after.
        answered = outbox.clock.advance(1)
        transitions.note_answered(connection, now=answered)
        assert not transitions.clear_key_unless_refused_since(
            connection, fingerprint=fingerprint, started=started, now=answered
        )
        assert gates.read(connection, fingerprint).key_refused  # the gate still holds it

    assert alarmed_keys(outbox) == 1
