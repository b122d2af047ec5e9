"""The fault suite: real PostgreSQL, Redis, sandbox, `celery` worker and beat, and one fault each.

Every scenario ends with `check_every_message`: each row accepted under the tracking id the
sandbox gave it, or failed for the reason expected of it, and no message received again after
a clear answer. Settings are harness.BASE_SETTINGS unless a scenario says otherwise.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import time

import pytest
from sqlalchemy import text

from models import SMSProject
from tests.e2e.harness import (
    ACCEPTED_ONCE,
    BASE_SETTINGS,
    CONCURRENCY,
    Expect,
    Stack,
    assert_recovered,
    assert_verdict,
    check_every_message,
    kill_a_worker_mid_batch,
    ordinary_recipient,
    project_messages,
    wait_for,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(240)]

DRAIN_TIMEOUT = 90.0


def report(name: str, stack: Stack, verdict: object, **figures: object) -> None:
    """One line per scenario with what it saw (pytest -rP or -s shows it)."""
    stats = stack.admin.stats()
    shown = " ".join(f"{key}={value}" for key, value in figures.items())
    print(f"\n{name}: {verdict}; sandbox requests={stats['requests']} {stats['by_status']} {shown}")


def test_worker_killed_with_sigkill_mid_batch_then_restarted(stack: Stack) -> None:
    """A crashed worker's batches come back when their lease ends; only they are resent."""
    total = 1_000
    verdict, in_flight = kill_a_worker_mid_batch(stack, "kill", total)
    report("sigkill", stack, verdict, in_flight_at_kill=in_flight)
    assert_recovered(verdict, total)


def test_redis_killed_and_restarted_mid_run(stack: Stack) -> None:
    """Redis holds only wake-ups: killed and restarted empty, nothing is lost or sent twice."""
    assert stack.redis is not None
    stack.start_sandbox("--latency-ms", "50")
    total = 1_500
    stack.enqueue(project_messages("redis", total))
    stack.start_outbox()

    wait_for(lambda: stack.count("status = 'accepted'") >= 200, timeout=30, what="a start")
    stack.redis.kill()
    accepted_at_kill = stack.count("status = 'accepted'")
    time.sleep(3)  # the fault's duration: Redis stays down for three poll intervals
    stack.restart(stack.redis, r"Ready to accept connections")
    stack.wait_all_final(total, timeout=DRAIN_TIMEOUT)

    for service in [stack.beat, *stack.workers]:
        assert service is not None and service.running, f"{service} died with Redis"
    verdict = check_every_message(stack.rows(), stack.admin.ledger())
    report("redis", stack, verdict, accepted_at_kill=accepted_at_kill)
    assert_verdict(verdict)
    assert accepted_at_kill < total, "Redis must go down before the backlog is drained"


def test_postgres_connections_dropped_mid_run(stack: Stack) -> None:
    """pg_terminate_backend on every worker connection, repeatedly: the workers recover."""
    stack.start_sandbox("--latency-ms", "200")
    total = 2_000
    stack.enqueue(project_messages("pgdrop", total))
    stack.start_outbox()

    wait_for(lambda: stack.count("status = 'accepted'") >= 100, timeout=30, what="a start")
    terminated = 0
    rounds = 0
    database = stack.engine.url.database
    kill_all = text(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = :database AND pid <> pg_backend_pid()"
    )
    while rounds < 8 and stack.final_count() < total:
        with stack.engine.connect() as connection:
            terminated += int(connection.scalar(kill_all, {"database": database}) or 0)
        rounds += 1
        time.sleep(0.4)
    stack.engine.dispose()  # its own pooled connections were among those terminated
    stack.wait_all_final(total, timeout=DRAIN_TIMEOUT)

    for service in [stack.beat, *stack.workers]:
        assert service is not None and service.running
    # A batch whose result statement died with its connection stays "sending" until its lease
    # ends and is then resent: its outcome was unknown to the outbox. At most one batch per
    # pool process per round can be caught so.
    batch = int(BASE_SETTINGS["OUTBOX_BATCH_SIZE"])
    verdict = check_every_message(
        stack.rows(), stack.admin.ledger(), lambda _: Expect(resend_ok=True)
    )
    report("pg_terminate", stack, verdict, rounds=rounds, backends_terminated=terminated)
    assert_verdict(verdict)
    assert terminated >= rounds, "each round must terminate at least one worker connection"
    assert verdict.resent <= rounds * CONCURRENCY * batch


def test_sandbox_outage_of_30_seconds(stack: Stack) -> None:
    """30 s of 503s: no message fails or spends an attempt; requests meanwhile stay bounded."""
    admin = stack.start_sandbox()
    first, during = 600, 300
    stack.enqueue(project_messages("outage", first))
    stack.start_outbox()
    wait_for(lambda: stack.count("status = 'accepted'") >= 100, timeout=30, what="a start")

    outage = 30.0
    admin.set_faults(outage=True)
    ends = time.monotonic() + outage
    stack.enqueue(project_messages("outage", during, start=first))  # new work meanwhile
    while time.monotonic() < ends:
        assert stack.count("status = 'failed'") == 0, "a message failed during the outage"
        time.sleep(1)
    requests_in_outage = admin.stats()["during_outage"]
    admin.set_faults(outage=False)
    stack.wait_all_final(first + during, timeout=DRAIN_TIMEOUT)

    # The bound, from the settings: before the circuit opens each request-level failure
    # pauses every worker, so at most OUTBOX_CIRCUIT_FAILURES failures plus the requests
    # already in flight, each of which the API had just answered before, so it is tried
    # once more in halves (is it a message?); once open, one probe of one message per
    # OUTBOX_PROBE_INTERVAL_SECONDS (10 s by default).
    circuit_failures, probe_interval = 5, 10.0
    bound = circuit_failures + 3 * CONCURRENCY + math.ceil(outage / probe_interval) + 1

    verdict = check_every_message(stack.rows(), stack.admin.ledger())
    report("outage", stack, verdict, requests_during_outage=requests_in_outage, bound=bound)
    assert_verdict(verdict)
    assert verdict.failed == 0
    assert stack.count("attempts <> 1") == 0, "the outage must not spend attempts"
    assert 0 < requests_in_outage <= bound


def test_slow_dropped_5xx_and_html_502_answers(stack: Stack) -> None:
    """10% slow after the work, 5% dropped, 5% 5xx, 3% HTML 502: all accepted, one id each."""
    batch = 10  # many requests, so that every fault strikes
    timeout = 1.0  # a slow answer comes after the client gave up: its outcome is unknown
    stack.settings.update(OUTBOX_BATCH_SIZE=str(batch), WIRAYA_TIMEOUT_SECONDS=str(timeout))
    stack.start_sandbox(
        *("--slow-after-work-ms", str(timeout * 1000 + 500), "--p-slow", "0.10"),
        *("--p-drop", "0.05", "--p500", "0.025", "--p503", "0.025", "--p502-html", "0.03"),
        seed=6,
    )
    total = 1_500
    stack.enqueue(project_messages("mix", total))
    stack.start_outbox()
    stack.wait_all_final(total, timeout=DRAIN_TIMEOUT)

    stats = stack.admin.stats()
    statuses = stats["by_status"]
    for fault in ("slow", "dropped"):
        assert stats[fault] > 0, f"no {fault} answer happened: the scenario proves nothing"
    assert statuses.get("500", 0) + statuses.get("503", 0) > 0, "no 5xx answer happened"
    assert statuses.get("502", 0) > 0, "no HTML 502 answer happened"
    # A slow answer (beyond the client's timeout) or a dropped one comes after the work: its
    # messages' outcome is unknown and they are resent; nothing else is received twice.
    unknown_messages = (stats["slow"] + stats["dropped"]) * batch
    verdict = check_every_message(
        stack.rows(), stack.admin.ledger(), lambda _: Expect(resend_ok=True)
    )
    report("fault mix", stack, verdict, slow=stats["slow"], dropped=stats["dropped"])
    assert_verdict(verdict)
    assert verdict.accepted == total
    assert verdict.extra_receipts <= unknown_messages


def test_rate_limited_with_retry_after(stack: Stack) -> None:
    """429 with Retry-After: the worker waits it out and slows down; nothing fails."""
    limit, retry_after = 3.0, 1
    admin = stack.start_sandbox("--rate-limit", str(limit), "--retry-after", str(retry_after))
    batch = 5  # small batches: the worker could send far more than the limit allows
    stack.settings["OUTBOX_BATCH_SIZE"] = str(batch)
    total = 200  # 40 requests: 13 s at the limit
    stack.start_outbox()
    admin.reset()
    started = time.monotonic()
    stack.enqueue(project_messages("ratelimit", total))
    stack.wait_all_final(total, timeout=DRAIN_TIMEOUT)
    elapsed = time.monotonic() - started

    stats = admin.stats()
    refused = stats["rate_limited"]
    verdict = check_every_message(stack.rows(), admin.ledger())
    report(
        "429",
        stack,
        verdict,
        seconds=round(elapsed, 1),
        refused_429=refused,
        requests_per_second=round(stats["requests"] / elapsed, 2),
    )
    assert_verdict(verdict)
    assert verdict.failed == 0
    assert stack.count("attempts <> 1") == 0, "a 429 must not spend attempts"
    assert refused > 0, "the limit must bite"
    # Each 429 pauses every worker for at least Retry-After: at most one 429 per pool
    # process per Retry-After period.
    assert refused <= CONCURRENCY * math.ceil(elapsed / retry_after)
    # The requests the API admitted stay under the limit (its bucket holds one second's worth:
    # the burst it allows at the start), and all of them, refused ones included, exceed it by
    # no more than those 429s: the worker never pushes on past what the API takes.
    admitted = stats["by_status"].get("200", 0)
    assert admitted <= limit * elapsed + limit
    assert stats["requests"] <= (limit + CONCURRENCY / retry_after) * elapsed + limit


def test_mixed_permanent_transient_and_invalid_in_request_validation_mode(stack: Stack) -> None:
    """Bad rows inserted by raw SQL fail alone, with a reason; valid ones are all accepted."""
    stack.start_sandbox("--validation", "request")
    stack.settings["OUTBOX_MAX_ATTEMPTS"] = "3"
    project = json.dumps(SMSProject(project_id=7, placeholders=["Ann"]).to_api())
    kinds: dict[str, tuple[int, str, str, Expect]] = {
        # kind: (how many, recipient, content JSON, what must become of each)
        "ok": (300, "", project, ACCEPTED_ONCE),
        "permanent": (
            20,
            "46700000001",
            project,
            Expect("failed", "rejected: recipient is blocked", receipts=1),
        ),
        "transient": (20, "46700000002", project, Expect("accepted", receipts=3)),
        "forever": (10, "46700000003", project, Expect("failed", "gave up after 3", receipts=3)),
        "omitted": (10, "46700000004", project, Expect("accepted", receipts=2)),
        "sender12": (
            10,
            "",
            json.dumps({"$type": "SMSFromAlpha", "sender": "TwelveChars1", "text": "hi"}),
            Expect("failed", "invalid: content.sender", receipts=0),
        ),
        "type": (
            10,
            "",
            json.dumps({"$type": "CarrierPigeon", "projectId": 1, "placeholders": []}),
            Expect("failed", "invalid: content.$type", receipts=0),
        ),
        "projectid": (
            10,
            "",
            json.dumps({"$type": "SMSProject", "projectId": "7", "placeholders": []}),
            Expect("failed", "invalid: content.projectId", receipts=0),
        ),
        # Valid to the worker, refused by the API (a number it does not take): the whole
        # request is answered 400, and the worker splits it until the row fails alone.
        "apirefused": (
            5,
            "46700000005",
            project,
            Expect("failed", "rejected: Invalid input format", receipts=0),
        ),
    }
    rows: list[tuple[str, str, str]] = []
    expected: dict[str, Expect] = {}
    for kind, (count, recipient, content, expect) in kinds.items():
        for number in range(count):
            cmid = f"{kind}-{number:04d}"
            rows.append((cmid, recipient or ordinary_recipient(len(rows)), content))
            expected[cmid] = expect
    random.Random(3).shuffle(rows)  # bad rows in (nearly) every batch
    stack.insert_raw(rows)
    stack.start_outbox()
    stack.wait_all_final(len(rows), timeout=DRAIN_TIMEOUT)

    verdict = check_every_message(stack.rows(), stack.admin.ledger(), expected.__getitem__)
    report("mixed", stack, verdict)
    assert_verdict(verdict)
    assert verdict.accepted == 330 and verdict.failed == 65
    assert stack.admin.stats()["by_status"].get("400", 0) > 0, "the split must be exercised"


def test_wrong_api_key_then_the_right_one(stack: Stack) -> None:
    """401: sending stops, messages stay pending and unspent; with the right key, all go."""
    right, wrong = "wk-right-5e1f0c9a7b", "wk-wrong-93d2a6e4f1"
    admin = stack.start_sandbox("--api-key", right)
    total = 500
    stack.enqueue(project_messages("key", total))
    stack.start_outbox(
        WIRAYA_API_KEY=wrong,
        OUTBOX_PROBE_INTERVAL_SECONDS="2",
        OUTBOX_REFUSED_KEY_RETRY_SECONDS="2",
    )

    def all_back_and_unspent() -> bool:
        refused = admin.stats()["by_status"].get("401", 0) >= 1
        return refused and stack.count("status = 'pending' AND attempts = 0") == total

    wait_for(all_back_and_unspent, timeout=30, what="a 401, and every message back, unspent")
    first = admin.stats()["by_status"]["401"]
    wait_for(
        lambda: admin.stats()["by_status"].get("401", 0) > first,
        timeout=30,
        what="the refused key's probe, one message on its cadence",
    )
    refusals = admin.stats()["by_status"]["401"]
    assert refusals == first + 1, "one probe at a time"
    assert admin.ledger() == {}
    with stack.engine.connect() as connection:
        refused = connection.scalar(
            text("SELECT count(*) FROM outbox_refused_keys WHERE cleared_at IS NULL")
        )
    assert refused == 1
    stack.stop_outbox()
    logs = stack.outbox_logs()
    assert "Unauthorized" in logs, "the alarm must be logged"
    assert wrong not in logs, "the API key must never be logged"

    stack.workers.clear()
    stack.start_outbox(WIRAYA_API_KEY=right)
    stack.wait_all_final(total, timeout=DRAIN_TIMEOUT)
    verdict = check_every_message(stack.rows(), admin.ledger())
    report("api key", stack, verdict, refusals_with_wrong_key=refusals)
    assert_verdict(verdict)
    assert verdict.accepted == total


@pytest.mark.parametrize("to", ["the whole process group", "the main process only"])
def test_sigterm_records_the_batches_in_flight_and_leaves_no_lease_behind(
    stack: Stack, to: str
) -> None:
    """SIGTERM mid-batch, as systemd (KillMode=control-group) or `docker stop` sends it."""
    # The sandbox accepts each batch, then answers 400 ms later: a SIGTERM strikes requests
    # whose messages the API already holds while their answers are still on the way.
    admin = stack.start_sandbox("--latency-ms", "50", "--slow-after-work-ms", "400")
    total = 1_000
    stack.enqueue(project_messages("term", total))
    stack.start_outbox()
    (worker,) = stack.workers
    assert worker.process is not None

    def answers_awaited() -> bool:
        sending = {row.client_message_id for row in stack.rows() if row.status == "sending"}
        return stack.count("status = 'accepted'") >= 100 and bool(sending & set(admin.ledger()))

    wait_for(answers_awaited, timeout=30, what="batches the API holds, their answers awaited")
    if to == "the whole process group":
        os.killpg(worker.process.pid, signal.SIGTERM)
    else:
        os.kill(worker.process.pid, signal.SIGTERM)
    exit_code = worker.process.wait(timeout=30)

    assert exit_code == 0
    assert stack.count("status = 'sending'") == 0, "recorded or released: no lease to wait out"
    stack.restart(worker, r"ready\.")
    stack.wait_all_final(total, timeout=DRAIN_TIMEOUT)
    verdict = check_every_message(stack.rows(), admin.ledger())  # each received exactly once
    report("sigterm", stack, verdict, to=to)
    assert_verdict(verdict)
    assert verdict.accepted == total and verdict.resent == 0
