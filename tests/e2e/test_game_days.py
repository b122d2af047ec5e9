"""Game days: the operator's three bad nights, read the way an operator on call reads them.

Real worker, beat, `outbox metrics` and Flower processes and the sandbox as Wiraya. Each night
is scripted, and at each step the test reads what an operator reads (`outbox stats` and its
JSON, Flower's API behind its login, the metrics, the alerts as promtool evaluates them on
the scraped values, the log files) and asserts what they say. Each night recovers by doing
what the runbook says, so a runbook that is wrong fails here. Time is compressed: outages of
seconds, a probe every two seconds. `-rP` prints each night's timeline and figures.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from models import NewMessage, Priority, SMSProject
from tests.e2e.harness import (
    Expect,
    Stack,
    assert_verdict,
    check_every_message,
    flower_dispatches,
    ordinary_recipient,
    project_messages,
    wait_for,
)
from tests.e2e.operator_view import (
    Timeline,
    alerts_firing,
    outbox,
    runbook_section,
    start_metrics,
    stats,
    wait_for_gauge,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(180)]

CREDENTIALS = "ops:game-day-password"
PROBE = {"OUTBOX_PROBE_INTERVAL_SECONDS": "2"}


@pytest.fixture
def night(request: pytest.FixtureRequest) -> Iterator[Timeline]:
    """The night's timeline, printed at the end whatever happened (`-rP` shows it)."""
    timeline = Timeline(request.node.name)
    yield timeline
    timeline.print()


def alarmed_in_flower(flower: str, words: str) -> list[dict[str, Any]]:
    """Failed dispatches in Flower whose exception names ``words``."""
    return [
        task
        for task in flower_dispatches(flower, CREDENTIALS)
        if task["state"] == "FAILURE" and words in str(task.get("exception"))
    ]


def alarm_lines(stack: Stack) -> list[str]:
    """The workers' WARNING and ERROR lines, tracebacks' lines included."""
    lines = "".join(w.log.read_text() for w in stack.workers).splitlines()
    return [ln for ln in lines if "WARNING" in ln or "ERROR" in ln or ln.startswith("Traceback")]


def first_accepted(stack: Stack, where: str = "true") -> bool:
    return stack.count(f"status = 'accepted' AND {where}") > 0


def test_night_one_an_outage_with_a_backlog(stack: Stack, night: Timeline) -> None:
    """The API down for a few probe intervals: stats says circuit OPEN, the alert fires within
    two minutes, one warning per change of state, and the backlog drains by itself."""
    admin = stack.start_sandbox()
    flower = stack.start_flower(CREDENTIALS)
    metrics = start_metrics(stack)
    stack.start_outbox(**PROBE)
    admin.set_faults(outage=True)
    total = 1_000
    stack.enqueue(project_messages("night1", total))
    night.note("API down (503 for every request); 1,000 messages queued")

    samples = wait_for_gauge(metrics, "outbox_circuit_open", 1, timeout=30)
    night.note("metrics: outbox_circuit_open 1")
    line, document = stats(stack)
    night.note(f"stats: {line}; retrying={document['retrying']}")
    assert "circuit OPEN" in line, line
    assert "next probe at" in line, line
    assert document["retrying"] == 0, "no attempt was spent: nothing is retrying"
    failed = wait_for(
        lambda: alarmed_in_flower(flower, "DispatchAlarm"), timeout=20, what="Flower's alarm"
    )
    night.note(f"Flower: FAILURE {failed[0]['exception'][:90]}")
    firing = alerts_firing(samples)
    night.note(f"alerts firing 2 minutes in: {sorted(firing)}")
    assert "OutboxCircuitOpen" in firing

    # Expected states log a line per change of state, not one (with a traceback) per probe.
    before = len(alarm_lines(stack))
    probes = admin.stats()["during_outage"]
    wait_for(lambda: admin.stats()["during_outage"] >= probes + 3, timeout=30, what="three probes")
    during = alarm_lines(stack)
    assert not [ln for ln in during if "Traceback" in ln or "raised unexpected" in ln], during
    assert len(during) == before, f"a line per probe: {during[before:]}"
    advice = runbook_section("outage")
    assert "circuit OPEN" in advice and "OutboxCircuitOpen" in advice

    admin.set_faults(outage=False)  # the runbook: nothing to do, it drains by itself
    fixed = night.note("API back (the runbook: nothing to do)")
    wait_for(lambda: first_accepted(stack), timeout=30, what="a message accepted")
    accepted = night.note("first message accepted")
    wait_for_gauge(metrics, "outbox_circuit_open", 0, timeout=30)
    cleared = night.note("alarm cleared: metrics outbox_circuit_open 0")
    line = stats(stack)[0]
    night.note(f"stats: {line}")
    assert line.startswith("dispatch     running"), line
    stack.wait_all_final(total, timeout=90)
    night.note("every message accepted")
    verdict = check_every_message(stack.rows(), admin.ledger())
    print(f"  fix -> first accepted {accepted - fixed:.1f}s, alarm cleared {cleared - fixed:.1f}s")
    assert_verdict(verdict)
    assert stack.count("attempts > 1") == 0


# The refused key's retry in night two: short, so that the test waits on it, not on a resume.
RETRY = "4"


def test_night_two_a_rotated_key(stack: Stack, night: Timeline) -> None:
    """A 401: the runbook's fix (new key, restart the workers) sends at the refused key's next
    try and ends the alarm without `outbox resume`; a 403 gets other advice."""
    right, wrong = "gd-right-8c1f2e", "gd-old-4b7a90"
    admin = stack.start_sandbox("--api-key", right)
    flower = stack.start_flower(CREDENTIALS)
    metrics = start_metrics(stack)
    total = 300
    stack.enqueue(project_messages("night2", total))
    # The refused key's retry at the test's cadence: recovery waits for it, or for `outbox resume`.
    stack.start_outbox(WIRAYA_API_KEY=wrong, OUTBOX_REFUSED_KEY_RETRY_SECONDS=RETRY, **PROBE)
    night.note("the key was rotated at Wiraya; 300 queued")
    samples = wait_for_gauge(metrics, "outbox_api_key_refused", 1, timeout=30)
    night.note("metrics: outbox_api_key_refused 1")
    line, _ = stats(stack)
    night.note(f"stats: {line}")
    assert "401" in line and "WIRAYA_API_KEY" in line, line
    failed = wait_for(
        lambda: alarmed_in_flower(flower, "Unauthorized"), timeout=20, what="Flower's alarm"
    )
    night.note(f"Flower: FAILURE {failed[0]['exception'][:90]}")
    assert "OutboxApiKeyRefused" in alerts_firing(samples, after="30s")
    assert not [ln for ln in alarm_lines(stack) if "Traceback" in ln]

    advice = runbook_section("refused")
    assert "restart the workers" in advice and "beat" in advice
    for worker in stack.workers:  # the runbook: new key, restart the workers (beat keeps on)
        worker.stop()
    stack.workers.clear()
    stack.start_worker(WIRAYA_API_KEY=right, OUTBOX_REFUSED_KEY_RETRY_SECONDS=RETRY, **PROBE)
    fixed = night.note("WIRAYA_API_KEY corrected, workers restarted (beat left running)")
    wait_for(lambda: first_accepted(stack), timeout=30, what="a message accepted")
    accepted = night.note("first message accepted")
    wait_for_gauge(metrics, "outbox_api_key_refused", 0, timeout=30)  # no `outbox resume`
    cleared = night.note("alarm cleared: metrics outbox_api_key_refused 0")
    line = stats(stack)[0]
    night.note(f"stats: {line}")
    assert "REFUSED" not in line, line
    stack.wait_all_final(total, timeout=60)
    night.note("every message accepted")

    # A 403 is Wiraya refusing this address: the advice is Wiraya's side, not the key.
    admin.set_faults(forbidden=True)
    stack.enqueue(project_messages("forbidden", 5))
    wait_for(lambda: "403" in stats(stack)[0], timeout=30, what="stats to name the 403")
    line = stats(stack)[0]
    night.note(f"403: stats: {line}")
    assert "WIRAYA_API_KEY" not in line and "Wiraya" in line, line
    admin.set_faults(forbidden=False)
    night.note(outbox(stack, "resume").strip())  # the runbook's step once Wiraya allows it
    stack.wait_all_final(total + 5, timeout=60)
    print(f"  fix -> first accepted {accepted - fixed:.1f}s, alarm cleared {cleared - fixed:.1f}s")
    assert_verdict(
        check_every_message(stack.rows(), admin.ledger(), lambda _: Expect(receipts=None))
    )


def _urgent_code(number: int) -> NewMessage:
    return NewMessage.create(
        client_message_id=f"code-{number:03d}",
        recipient=ordinary_recipient(900_000 + number),
        content=SMSProject(project_id=7, placeholders=[f"{number:06d}"]),
        priority=Priority.URGENT,
    )


def test_night_three_a_runaway_campaign(stack: Stack, night: Timeline) -> None:
    """4,000 bulk messages queued by mistake; the API lowers its item limit to 25 while urgent
    codes arrive: they are not held behind the batches halving down to it; the cancel says
    what it selects, by lane, warns of urgent ones, and names those being sent."""
    admin = stack.start_sandbox("--latency-ms", "50")
    stack.settings["OUTBOX_BATCH_SIZE"] = "500"
    stack.start_outbox(**PROBE)
    bulk = [
        NewMessage.create(
            client_message_id=m.client_message_id,
            recipient=m.recipient,
            content=m.content,
            priority=Priority.BULK,
        )
        for m in project_messages("campaign", 4_000)
    ]
    reminders = [
        NewMessage.create(
            client_message_id=f"reminder-{n}",
            recipient=ordinary_recipient(800_000 + n),
            content=SMSProject(project_id=8, placeholders=["tomorrow"]),
            priority=Priority.URGENT,
            send_at=datetime.now(UTC) + timedelta(hours=1),
        )
        for n in range(5)
    ]
    stack.enqueue(reminders + bulk)
    night.note("4,000 bulk queued by mistake (and 5 urgent reminders for later)")
    wait_for(lambda: first_accepted(stack), timeout=30, what="the campaign sending")
    admin.set_faults(max_batch=25)  # batches of 500 were taken; now the API takes 25 at most
    night.note("the API lowers its limit to 25 items per request; 20 urgent codes arrive")
    for number in range(20):
        stack.enqueue([_urgent_code(number)])
        time.sleep(0.1)
    wait_for(
        lambda: stack.count("status = 'accepted' AND client_message_id LIKE 'code-%'") == 20,
        timeout=60,
        what="every urgent code accepted",
    )
    waits = _urgent_waits(stack)
    night.note(f"urgent codes accepted: wait max {max(waits):.2f}s, mean {sum(waits) / 20:.2f}s")

    shown = outbox(stack, "cancel", "--since", "2m ago", answer="n\n")
    night.note("filter-only cancel asks: " + " / ".join(shown.strip().splitlines()))
    assert "urgent" in shown and "bulk" in shown, shown
    assert "WARNING" in shown, shown
    assert "--priority bulk" in runbook_section("runaway campaign")  # what the runbook says
    # Each request now takes 1.5 s (under the 2 s timeout): a batch is in flight when the cancel
    # counts, as on a night with a busy API, not only when a fast one happens to be.
    admin.set_faults(latency_ms=1500)
    wait_for(lambda: stack.count("status = 'sending'") > 0, timeout=10, what="a batch in flight")
    done = outbox(stack, "cancel", "--priority", "bulk", "--yes")
    night.note("cancel --priority bulk: " + " / ".join(done.strip().splitlines()))
    assert "being sent" in done, done
    stack.wait_all_final(4_020, timeout=60)  # the reminders stay pending, for later
    cancelled = stack.count("status = 'cancelled'")
    accepted_now = stack.count("status = 'accepted'")
    night.note(f"{cancelled} cancelled, {accepted_now} accepted")
    verdict = check_every_message(
        stack.rows(),
        admin.ledger(),
        lambda cmid: Expect("cancelled", receipts=0) if cmid in _cancelled(stack) else _kept(cmid),
    )
    assert_verdict(verdict)
    # How much bulk the API took while an urgent code waited: the halvings of at most the
    # batches in flight when it arrived, not whole 500-message ladders.
    held = _bulk_taken_while_urgent_waited(stack, admin.ledger())
    print(f"  bulk messages taken while an urgent code waited: at most {held}")
    assert held <= 4 * 25 * 2, held


def _kept(cmid: str) -> Expect:
    """Reminders are for later (pending, never sent); the rest accepted once."""
    return Expect("pending", receipts=0) if cmid.startswith("reminder") else Expect()


def _urgent_waits(stack: Stack) -> list[float]:
    with stack.engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT extract(epoch FROM accepted_at - created_at) FROM outbox_messages "
                "WHERE client_message_id LIKE 'code-%'"
            )
        ).scalars()
        return [float(value) for value in rows]


_CANCELLED: dict[int, set[str]] = {}


def _cancelled(stack: Stack) -> set[str]:
    if id(stack) not in _CANCELLED:
        with stack.engine.connect() as connection:
            query = "SELECT client_message_id FROM outbox_messages WHERE status = 'cancelled'"
            _CANCELLED[id(stack)] = set(connection.execute(text(query)).scalars())
    return _CANCELLED[id(stack)]


def _bulk_taken_while_urgent_waited(stack: Stack, ledger: dict[str, Any]) -> int:
    """The most bulk messages the sandbox took between an urgent code's insert and its receipt."""
    with stack.engine.connect() as connection:
        created = dict(
            connection.execute(
                text(
                    "SELECT client_message_id, created_at FROM outbox_messages "
                    "WHERE client_message_id LIKE 'code-%'"
                )
            ).all()
        )
    bulk = sorted(e.first_received for k, e in ledger.items() if k.startswith("campaign"))
    worst = 0
    slack = timedelta(milliseconds=250)
    for cmid, at in created.items():
        received = ledger[cmid].first_received
        worst = max(worst, sum(1 for moment in bulk if at + slack < moment < received - slack))
    return worst
