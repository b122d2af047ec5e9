"""Sending policy: the drain with every rule on and nothing held, against every rule off, and
the screening cost of each rule per message, on PostgreSQL.

One in-process Dispatcher (as a pool process runs it, no Celery) drains fresh copies of one
backlog of bulk SMSFromAlpha messages to distinct recipients, sending to the sandbox (its own
process, 20 ms latency): with the policy off, then with every rule on (quiet hours placed away
from now in the recipients' zone, pacing 6 s, a dedupe window of 10 minutes, the NOT_DELIVERED
rule at 3, and 10,000 other recipients on the opt-out list), so that the rules are checked and
nothing is held. The two alternate, twice each, and each prints messages/s and the worker's CPU
per message. Then each rule alone is applied to batches of 100 claimed messages (the policy's
own function on the same database), against no rule, for its cost per message.

Run: .venv/bin/python bench/bench_policy.py [--messages 20000] [--latency-ms 20] [--batch 100]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import support
from sqlalchemy import Engine

from worker.database import make_engine
from worker.dispatch.claim import ClaimedRow
from worker.dispatch.dispatcher import Dispatcher
from worker.dispatch.policy import rules
from worker.dispatch.screen import Outgoing
from worker.dispatch.summary import BatchState
from worker.policy import Policy, QuietWindow
from worker.settings import Settings
from worker.wiraya.client import WirayaClient
from worker.wiraya.results import Communication

TEMPLATE = "outbox_bench_policy_backlog"
RUN = "outbox_bench_policy"
TEXT = "Our winter sale starts today: 20% off everything until Sunday. Reply STOP to opt out."
ROUNDS = 2
REPEATS = 40


def _dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def build_backlog(messages: int) -> None:
    """The template: ``messages`` due bulk texts to distinct recipients, each with its segment
    count as `enqueue` stores it, and an opt-out list."""
    url = support.create_database(TEMPLATE)
    with psycopg.connect(_dsn(url), autocommit=True) as connection:
        connection.execute(
            """
            INSERT INTO outbox_messages (client_message_id, recipient, content, priority,
                                         segments)
            SELECT 'policy-' || lpad(g::text, 7, '0'),
                   '4670' || lpad((1000000 + g)::text, 7, '0'),
                   jsonb_build_object('$type', 'SMSFromAlpha', 'sender', 'Wiraya',
                                      'text', %s::text),
                   2, 1
            FROM generate_series(1, %s) AS g
            """,
            (TEXT, messages),
        )
        connection.execute(
            """
            INSERT INTO outbox_suppressions (recipient, scope, reason, source)
            SELECT '4673' || lpad(g::text, 7, '0'), 'campaigns', 'STOP', 'operator'
            FROM generate_series(1, 10000) AS g
            """
        )
        connection.execute("VACUUM ANALYZE")


def quiet_window_away_from_now() -> str:
    """A one-minute window twelve hours from now in Stockholm: checked, never holding."""
    start = datetime.now(ZoneInfo("Europe/Stockholm")) + timedelta(hours=12)
    end = start + timedelta(minutes=1)
    return f"{start:%H:%M}-{end:%H:%M}"


def every_rule() -> dict[str, str]:
    return {
        "OUTBOX_QUIET_HOURS": quiet_window_away_from_now(),
        "OUTBOX_QUIET_PRIORITIES": "bulk",
        "OUTBOX_RECIPIENT_MIN_INTERVAL_SECONDS": "6",
        "OUTBOX_DEDUPE_WINDOW_SECONDS": "600",
        "OUTBOX_SUPPRESS_AFTER_NOT_DELIVERED": "3",
    }


def drain(
    sandbox_url: str, messages: int, batch: int, policy: dict[str, str]
) -> tuple[float, float]:
    """A fresh copy drained by one dispatcher: messages/s and worker CPU µs per message."""
    with support.scratch_database(RUN, template=TEMPLATE) as url:
        settings = Settings.from_environ(
            {"OUTBOX_BATCH_SIZE": str(batch), "OUTBOX_BATCH_SIZE_MAX": str(batch), **policy},
            OUTBOX_DATABASE_URL=url,
            WIRAYA_BASE_URL=sandbox_url,
        )
        engine = make_engine(url)
        with WirayaClient.from_settings(settings) as client:
            dispatcher = Dispatcher(settings, engine, client)
            done = dispatcher.dispatch_once(wake=False).accepted  # connections opened
            cpu, wall = time.process_time(), time.monotonic()
            sent = 0
            while done + sent < messages:
                summary = dispatcher.dispatch()
                if summary.state is not BatchState.SENT or summary.policy:
                    raise RuntimeError(f"not a clean drain: {summary.as_dict()}")
                sent += summary.accepted
            cpu, seconds = time.process_time() - cpu, time.monotonic() - wall
        engine.dispose()
    return sent / seconds, cpu * 1e6 / sent


def batch_of(size: int, offset: int) -> list[Outgoing]:
    """Claimed messages as the screen hands them to the policy: distinct recipients."""
    content = {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": TEXT}
    batch = []
    for n in range(size):
        to = f"4671{offset + n:07d}"
        row = ClaimedRow(n + 1, f"c{n}", to, content, 1, 2, None, None, None, segments=1)
        batch.append(Outgoing(row.id, row, Communication(f"c{n}", to, content), None, 0))
    return batch


def rule_cost(engine: Engine, policy: Policy, batch_size: int) -> float:
    """Seconds per message of ``policy.apply`` on batches of ``batch_size``, best of REPEATS."""
    best = float("inf")
    now = datetime.now(UTC)
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        for repeat in range(REPEATS):
            batch = batch_of(batch_size, repeat * batch_size)
            moment = now + timedelta(seconds=7 * repeat)
            started = time.perf_counter()
            verdict = rules.apply(policy, connection, batch, moment)
            best = min(best, time.perf_counter() - started)
            assert len(verdict.outgoing) == batch_size, verdict.counts
    return best / batch_size


def rule_costs(batch: int) -> list[str]:
    window = QuietWindow.parse(quiet_window_away_from_now())
    alone: dict[str, Callable[[], Policy]] = {
        "quiet hours": lambda: Policy(quiet_hours=window),
        "pacing (booking)": lambda: Policy(min_interval=timedelta(seconds=6)),
        "duplicate guard": lambda: Policy(dedupe_window=timedelta(minutes=10)),
        "NOT_DELIVERED rule": lambda: Policy(suppress_after_not_delivered=3),
    }
    lines = []
    with support.scratch_database(RUN, template=TEMPLATE) as url:
        engine = make_engine(url)
        base = rule_cost(engine, Policy(), batch)
        lines.append(f"  always on (the opt-out look-up, segments counted): {base * 1e6:.1f} µs")
        for name, make in alone.items():
            cost = rule_cost(engine, make(), batch) - base
            lines.append(f"  {name}: +{cost * 1e6:.1f} µs")
        engine.dispose()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    support.heading(
        f"sending policy: one in-process Dispatcher, {args.messages:,} bulk texts in "
        f"PostgreSQL, batches of {args.batch}, sandbox latency {args.latency_ms:g} ms"
    )
    print(support.load_average(), flush=True)
    build_backlog(args.messages)
    results: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
    try:
        with support.sandbox("--latency-ms", str(args.latency_ms)) as sandbox:
            for _ in range(ROUNDS):
                for label, policy in (("off", {}), ("on", every_rule())):
                    rate, cpu = drain(sandbox.url, args.messages, args.batch, policy)
                    results[label].append((rate, cpu))
                    print(
                        f"  policy {label:<3}: {rate:,.0f} messages/s, worker CPU "
                        f"{cpu:.1f} µs per message",
                        flush=True,
                    )
        print("screening cost per message, batches of 100 (best of 40):")
        print("\n".join(rule_costs(args.batch)))
    finally:
        support.drop_database(TEMPLATE)
    off = _mean([rate for rate, _ in results["off"]])
    on = _mean([rate for rate, _ in results["on"]])
    cpu_off = _mean([cpu for _, cpu in results["off"]])
    cpu_on = _mean([cpu for _, cpu in results["on"]])
    print(
        f"every rule on, nothing held: {on:,.0f} against {off:,.0f} messages/s off "
        f"({(off - on) / off:+.1%} lost; target at most 10%); worker CPU {cpu_on:.1f} against "
        f"{cpu_off:.1f} µs per message"
    )
    print(support.load_average(), flush=True)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


if __name__ == "__main__":
    main()
