"""Quirks of a real API server, end to end: real PostgreSQL, Redis, sandbox, `celery` worker, beat.

Each scenario starts the sandbox with the quirk switched on and ends with `check_every_message`
(see tests/e2e/test_faults.py): each row accepted under the tracking id the sandbox gave it, and
no message received again after a clear answer.
"""

from __future__ import annotations

import pytest

from tests.e2e.harness import (
    BASE_SETTINGS,
    Expect,
    Stack,
    assert_verdict,
    check_every_message,
    project_messages,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(240)]

DRAIN_TIMEOUT = 90.0


def test_mixed_case_ids_against_a_server_that_camel_cases_result_keys(stack: Stack) -> None:
    """A Newtonsoft.Json server keys results `order-000001` for `Order-000001`, `inV-000100` for
    `INV-000100`: every message is matched to its result and accepted on the first receipt."""
    admin = stack.start_sandbox("--camel-case-keys", "--latency-ms", "20")
    messages = (
        project_messages("Order", 150)  # one leading capital: lowered
        + project_messages("INV", 150, start=150)  # a run of capitals: all but the last lowered
        + project_messages("order", 150, start=300)  # already lower case: spelled as it is
    )
    stack.enqueue(messages)
    # Few attempts: a client that cannot match the keys fails these messages within seconds.
    stack.start_outbox(OUTBOX_MAX_ATTEMPTS="3")
    stack.wait_all_final(len(messages), timeout=DRAIN_TIMEOUT)

    verdict = check_every_message(stack.rows(), admin.ledger())
    stats = admin.stats()
    print(
        f"\ncamel-case keys: {verdict}; sandbox requests={stats['requests']} {stats['by_status']}"
    )
    assert_verdict(verdict)
    assert verdict.accepted == len(messages)
    assert stats["duplicates"] == 0


def test_trickling_answers_end_at_the_timeout_and_are_never_resent_in_flight(stack: Stack) -> None:
    """30% of answers trickle in over 8 s, a few bytes every few milliseconds (no per-read
    timeout fires), longer than the 6 s lease. Each request ends at WIRAYA_TIMEOUT_SECONDS (2 s),
    its rows go back unsent-for-sure and are resent under the same ids: never while the earlier
    answer is still on its way, so no two workers ever hold one message in flight."""
    assert float(BASE_SETTINGS["WIRAYA_TIMEOUT_SECONDS"]) < 8 - 3  # the trickle outlasts both
    assert float(BASE_SETTINGS["OUTBOX_LEASE_SECONDS"]) < 8
    admin = stack.start_sandbox("--trickle-ms", "8000", "--p-trickle", "0.3")
    total = 600
    stack.enqueue(project_messages("trickle", total))
    stack.start_outbox()
    stack.wait_all_final(total, timeout=DRAIN_TIMEOUT)

    verdict = check_every_message(stack.rows(), admin.ledger(), lambda _: Expect(resend_ok=True))
    stats = admin.stats()
    print(
        f"\ntrickle: {verdict}; sandbox requests={stats['requests']} {stats['by_status']} "
        f"trickled={stats['trickled']} hung_up={stats['hung_up']} "
        f"received_while_answering={stats['received_while_answering']}"
    )
    assert_verdict(verdict)
    assert verdict.accepted == total
    assert stats["trickled"] > 0
    assert stats["received_while_answering"] == 0
