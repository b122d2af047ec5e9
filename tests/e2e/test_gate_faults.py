"""The sending gate against real worker processes: each sequence that once broke a promise.

Real PostgreSQL, a private Redis, the sandbox as a process, `celery` worker and beat. Each
scenario ends with `check_every_message`: accepted under the sandbox's tracking id or failed
for the expected reason, and never received again after a clear answer. Settings are
harness.BASE_SETTINGS unless a scenario says otherwise; `-rP` prints each scenario's figures.
"""

from __future__ import annotations

import math
import time

import pytest

from models import NewMessage, SMSProject
from sandbox.recipients import POISON_SUFFIX
from tests.e2e.harness import (
    CONCURRENCY,
    Expect,
    Stack,
    assert_verdict,
    check_every_message,
    project_messages,
    wait_for,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(240)]

DRAIN_TIMEOUT = 90.0


def report(name: str, stack: Stack, verdict: object, **figures: object) -> None:
    stats = stack.admin.stats()
    shown = " ".join(f"{key}={value}" for key, value in figures.items())
    print(f"\n{name}: {verdict}; sandbox requests={stats['requests']} {stats['by_status']} {shown}")


def test_after_an_outage_longer_than_the_max_age_sending_resumes_within_a_probe_interval(
    stack: Stack,
) -> None:
    """The circuit's probe skips the messages that expired meanwhile and reopens at once."""
    admin = stack.start_sandbox()
    stack.start_outbox(
        OUTBOX_MAX_AGE_SECONDS="6",
        OUTBOX_BACKOFF_MAX_SECONDS="120",  # a probe on the messages' backoff would wait this
        OUTBOX_PROBE_INTERVAL_SECONDS="2",
    )
    admin.set_faults(outage=True)
    stack.enqueue(project_messages("old", 300))
    wait_for(lambda: stack.gate().get("failures", 0) >= 5, timeout=30, what="the circuit open")
    time.sleep(8)  # the outage outlives OUTBOX_MAX_AGE_SECONDS: every queued message expires
    admin.set_faults(outage=False)
    back = time.monotonic()
    stack.enqueue(project_messages("new", 300))
    stack.wait_all_final(600, timeout=DRAIN_TIMEOUT)
    recovery = time.monotonic() - back

    verdict = check_every_message(
        stack.rows(),
        admin.ledger(),
        lambda cmid: (
            Expect("failed", "expired: ", receipts=0) if cmid.startswith("old") else Expect()
        ),
    )
    report("expired backlog", stack, verdict, seconds_to_drain_the_new=round(recovery, 1))
    assert_verdict(verdict)
    assert verdict.accepted == 300


def test_a_fixed_key_during_an_outage_still_obeys_the_circuit(stack: Stack) -> None:
    """A refused key stops that key only; the restarted workers keep every other brake."""
    right, wrong = "gk-right-51e0a3", "gk-wrong-7c22d9"
    admin = stack.start_sandbox("--api-key", right)
    total = 400
    stack.enqueue(project_messages("key", total))
    stack.start_outbox(WIRAYA_API_KEY=wrong)
    wait_for(lambda: admin.stats()["by_status"].get("401", 0) >= 1, timeout=30, what="a 401")
    admin.set_faults(outage=True)
    stack.stop_outbox()
    stack.workers.clear()

    outage = 20.0
    started = admin.stats()["during_outage"]
    stack.start_outbox(WIRAYA_API_KEY=right)  # the runbook: fix the key, restart
    time.sleep(outage)
    requests_in_outage = admin.stats()["during_outage"] - started
    admin.set_faults(outage=False)
    stack.wait_all_final(total, timeout=DRAIN_TIMEOUT)

    # Before the circuit opens: OUTBOX_CIRCUIT_FAILURES counted failures and the batches in
    # flight (tried once in halves); then one probe per OUTBOX_PROBE_INTERVAL_SECONDS (10 s).
    bound = 5 + 3 * CONCURRENCY + math.ceil(outage / 10) + 1
    verdict = check_every_message(stack.rows(), admin.ledger())
    report("key fixed in an outage", stack, verdict, requests_during_outage=requests_in_outage)
    assert_verdict(verdict)
    assert verdict.accepted == total
    assert requests_in_outage <= bound, f"{requests_in_outage} requests, bound {bound}"


def test_a_message_that_fails_every_request_is_isolated_and_holds_nothing_back(
    stack: Stack,
) -> None:
    """The poison recipient draws HTTP 500 for its whole request; the others go through."""
    admin = stack.start_sandbox()
    total = 2_000
    messages = project_messages("poison", total)
    messages[700] = NewMessage.create(
        client_message_id="poison-bad",
        recipient="4670" + POISON_SUFFIX,
        content=SMSProject(project_id=123, placeholders=["Bad"]),
    )
    stack.start_outbox(OUTBOX_MAX_ATTEMPTS="3")
    started = time.monotonic()
    stack.enqueue(messages)
    wait_for(
        lambda: stack.count("status = 'accepted'") == total - 1,
        timeout=DRAIN_TIMEOUT,
        what="every batch-mate accepted",
        every=0.25,
    )
    mates_done = time.monotonic() - started
    stack.wait_all_final(total, timeout=DRAIN_TIMEOUT)

    verdict = check_every_message(
        stack.rows(),
        admin.ledger(),
        lambda cmid: (
            Expect("failed", "isolated: ", receipts=0) if cmid == "poison-bad" else Expect()
        ),
    )
    report("poison", stack, verdict, seconds_until_batch_mates_accepted=round(mates_done, 1))
    assert_verdict(verdict)
    assert stack.count("client_message_id = 'poison-bad' AND last_error LIKE 'gave up%'") == 1
    assert stack.gate().get("failures") == 0


def test_a_rate_limit_is_learnt_and_429s_stay_few(stack: Stack) -> None:
    """1 request/s with Retry-After: 5: sending never stops, and 429s stay a small share."""
    admin = stack.start_sandbox("--rate-limit", "1", "--retry-after", "5")
    stack.settings["OUTBOX_BATCH_SIZE"] = "2"
    total = 60  # 30 requests at the limit
    stack.start_outbox()
    admin.reset()
    started = time.monotonic()
    stack.enqueue(project_messages("rate", total))
    stack.wait_all_final(total, timeout=DRAIN_TIMEOUT * 2)
    elapsed = time.monotonic() - started

    stats = admin.stats()
    refused, admitted = stats["rate_limited"], stats["by_status"].get("200", 0)
    verdict = check_every_message(stack.rows(), admin.ledger())
    report(
        "learnt rate",
        stack,
        verdict,
        seconds=round(elapsed, 1),
        useful_per_second=round(admitted / elapsed, 2),
        refused_429=refused,
    )
    assert_verdict(verdict)
    assert stack.count("attempts <> 1") == 0, "a 429 must not spend attempts"
    assert refused <= max(2, admitted / 4), f"{refused} 429s for {admitted} answers"
