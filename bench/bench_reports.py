"""Delivery reports: how fast the receiver stores them, and what matching costs the worker's record.

1. A real `outbox receiver` process on PostgreSQL, 100,000 accepted messages in the table:
   reports stored per second with 10,000 reports per request, and the answer time (p50, p99,
   max) of requests of 500 reports, sent one after the other.
2. The same store in-process (no HTTP), PostgreSQL and SQLite.
3. The worker's record statement (`worker.dispatch.record`) of 100 and 500 accepted rows:
   before migration 0006 (no tracking-id index, no trigger), with the index alone, as shipped
   (index and the early-report trigger), and as shipped when a tenth of the rows have an
   early report waiting. Median and p90 milliseconds per statement.

Run: .venv/bin/python bench/bench_reports.py [--messages 100000]
"""

from __future__ import annotations

import argparse
import base64
import itertools
import os
import statistics
import sys
import time
from datetime import UTC, datetime

import httpx
import orjson
import psycopg
import support
from sqlalchemy import Engine, text

from models import Status
from worker.database import make_engine
from worker.dispatch.record import RowResult, record
from worker.reports.parsing import Report, parse_body
from worker.reports.storage import store_reports

DATABASE = "outbox_bench_reports"
AUTH = "bench:" + "5f0c7d2a9e3b4816"
ROUNDS = 30  # record statements per variant and size


def tracking(number: int) -> str:
    return f"{number:032x}"


def reports_json(numbers: range, status: str = "DELIVERED") -> bytes:
    return orjson.dumps(
        [
            {
                "trackingId": tracking(n),
                "status": status,
                "recipient": "46701234567",
                "doneAt": "2026-12-02T10:00:05Z",
            }
            for n in numbers
        ]
    )


def accepted_messages(url: str, count: int) -> None:
    """``count`` accepted rows under tracking(1..count), as a drain leaves them."""
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(
            """
            INSERT INTO outbox_messages (client_message_id, recipient, content, status, attempts,
                                         tracking_id, accepted_at)
            SELECT 'r-' || g, '46701234567', '{"$type": "SMSProject", "projectId": 1}',
                   'accepted', 1, lpad(to_hex(g), 32, '0'), now()
            FROM generate_series(1, %s) AS g
            """,
            (count,),
        )
        connection.execute("VACUUM ANALYZE outbox_messages")


# -- 1. the receiver over HTTP -------------------------------------------------------------------


def over_http(url: str, messages: int) -> None:
    port = support.free_port()
    env = dict(os.environ, OUTBOX_DATABASE_URL=url, OUTBOX_CALLBACK_AUTH=AUTH)
    env["CELERY_BROKER_URL"] = "filesystem://"
    argv = [sys.executable, "-m", "worker.ops.cli", "receiver", "--port", str(port)]
    login = {"Authorization": "Basic " + base64.b64encode(AUTH.encode()).decode()}
    endpoint = f"http://127.0.0.1:{port}/wiraya/callbacks"
    with support.process("receiver", argv, env) as receiver, httpx.Client(timeout=120) as client:
        receiver.wait_for_log(r"receiver listening", timeout=30)
        client.post(endpoint, content=reports_json(range(1, 11)), headers=login)  # warm up
        requests, per_request = 10, 10_000
        meter = support.CpuMeter(
            receiver=receiver.tree, database=lambda: support.postgres_backends(DATABASE)
        )
        started = time.perf_counter()
        for number in range(requests):
            first = 11 + number * per_request
            body = reports_json(range(first, first + per_request))
            answer = client.post(endpoint, content=body, headers=login)
            assert answer.status_code == 200 and answer.json()["stored"] == per_request, answer.text
        seconds = time.perf_counter() - started
        cpu = meter.used()
        total = requests * per_request
        matched = min(total, messages - 10)
        cpu_seconds = cpu["receiver"] + cpu["database"]
        print(
            f"receiver over HTTP, {per_request:,} reports per request: {total / seconds:,.0f} "
            f"reports/s ({total:,} in {seconds:.2f} s, {requests} requests, {matched:,} of them "
            f"matched to messages and updating them); CPU seconds: receiver "
            f"{cpu['receiver']:.2f}, database {cpu['database']:.2f}, that is "
            f"{total / cpu_seconds:,.0f} reports per CPU-second; machine busy "
            f"{cpu['machine busy %']:.0f}%, load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        latencies = []
        base = 11 + requests * per_request
        for number in range(200):
            body = reports_json(
                range(base + number * 500, base + (number + 1) * 500), "NOT_DELIVERED"
            )
            started = time.perf_counter()
            answer = client.post(endpoint, content=body, headers=login)
            latencies.append((time.perf_counter() - started) * 1000)
            assert answer.status_code == 200, answer.text
        print(
            f"receiver answer time, 200 requests of 500 reports one after the other: "
            f"p50 {support.percentile(latencies, 0.5):.1f} ms, "
            f"p99 {support.percentile(latencies, 0.99):.1f} ms, max {max(latencies):.1f} ms",
            flush=True,
        )


# -- 2. the store alone --------------------------------------------------------------------------


def parsed(numbers: range) -> list[Report]:
    return parse_body(reports_json(numbers), received_at=datetime.now(UTC)).reports


def store_alone(label: str, engine: Engine, first: int, matched: bool) -> None:
    """Five requests of 10,000 reports, for messages in the table or (unmatched) not."""
    batches = [parsed(range(first + n * 10_000, first + (n + 1) * 10_000)) for n in range(5)]
    backends = (lambda: support.postgres_backends(DATABASE)) if _is_pg(engine) else lambda: []
    with engine.connect() as connection:  # the pool's connection exists before the meter starts
        connection.execute(text("SELECT 1"))
    meter = support.CpuMeter(database=backends, receiver=lambda: [os.getpid()])
    started = time.perf_counter()
    for batch in batches:
        store_reports(engine, batch, received_at=datetime.now(UTC))
    seconds = time.perf_counter() - started
    cpu = meter.used()
    kind = "matched to messages" if matched else "no message holds them (stored, then re-matched)"
    print(
        f"store alone ({label}), 10,000 per request, {kind}: {50_000 / seconds:,.0f} reports/s "
        f"(50,000 in {seconds:.2f} s; parsing excluded); CPU seconds: this process "
        f"{cpu['receiver']:.2f}, database {cpu['database']:.2f}; machine busy "
        f"{cpu['machine busy %']:.0f}%",
        flush=True,
    )


# -- 3. the record path --------------------------------------------------------------------------


def sending_rows(engine: Engine, count: int) -> list[int]:
    """``count`` rows as a claim leaves them (sending under a lease, attempt 1, under TOKEN);
    their ids."""
    content = '{"$type": "SMSProject", "projectId": 1}'
    values = ", ".join(
        f"('b-{n}', '46701234567', '{content}', 'sending', 1, {TOKEN}, CURRENT_TIMESTAMP)"
        for n in range(count)
    )
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM outbox_messages WHERE client_message_id LIKE 'b-%'"))
        start = connection.scalar(text("SELECT coalesce(max(id), 0) FROM outbox_messages")) or 0
        connection.execute(
            text(
                "INSERT INTO outbox_messages (client_message_id, recipient, content, status, "
                f"attempts, claim_token, locked_until) VALUES {values}"
            )
        )
        ids = connection.scalars(
            text("SELECT id FROM outbox_messages WHERE id > :start ORDER BY id"), {"start": start}
        )
        return list(ids)


TRACKING_NUMBERS = itertools.count(10_000_000, 1_000)  # fresh tracking ids for every round
TOKEN = 4242  # the claim token the record is guarded by


def time_records(engine: Engine, size: int, early: bool) -> list[float]:
    timings = []
    for _ in range(ROUNDS):
        ids = sending_rows(engine, size)
        base = next(TRACKING_NUMBERS)
        if early:  # a report for every tenth row, stored before its record
            store_reports(
                engine, parsed(range(base, base + size, 10)), received_at=datetime.now(UTC)
            )
        results = [
            RowResult(i, Status.ACCEPTED, 1, tracking_id=tracking(base + n))
            for n, i in enumerate(ids)
        ]
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))  # connected before the clock starts
            connection.commit()
            started = time.perf_counter()
            written = record(connection, results, token=TOKEN, now=datetime.now(UTC))
            connection.commit()
            timings.append((time.perf_counter() - started) * 1000)
            assert len(written) == size, "the record wrote fewer rows than it was given"
    return timings


VARIANTS = (  # from the full migration down, each removing one more piece (nothing to restore)
    ("as shipped, a tenth with early reports", True, None),
    ("as shipped", False, None),
    ("index, no trigger", False, "DROP TRIGGER outbox_messages_match_reports"),
    ("before 0006", False, "DROP INDEX ix_outbox_messages_tracking_id"),
)


def record_path(label: str, engine: Engine) -> None:
    """Leaves the database without the trigger and the index: run it last on a database."""
    figures: dict[int, list[str]] = {100: [], 500: []}
    for name, early, removal in VARIANTS:
        if removal is not None:
            on_table = " ON outbox_messages" if "TRIGGER" in removal and _is_pg(engine) else ""
            with engine.begin() as connection:
                connection.execute(text(removal + on_table))
        for size, shown in figures.items():
            timings = time_records(engine, size, early)
            median, p90 = statistics.median(timings), support.percentile(timings, 0.9)
            shown.append(f"{name} {median:.2f} / {p90:.2f}")
    for size, shown in figures.items():
        print(f"record of {size} rows ({label}), median / p90 ms: " + "; ".join(shown), flush=True)


def _is_pg(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()
    support.heading(f"delivery reports: receiver and record path ({args.messages:,} messages)")
    print(f"load average at start: {os.getloadavg()[0]:.1f}", flush=True)
    with support.scratch_database(DATABASE) as url:
        accepted_messages(url, args.messages)
        over_http(url, args.messages)
        engine = make_engine(url)
        store_alone("PostgreSQL", engine, 50_001, matched=True)
        store_alone("PostgreSQL", engine, 2_000_000, matched=False)
        record_path("PostgreSQL", engine)
        engine.dispose()
    with support.scratch_sqlite() as url:
        engine = make_engine(url)
        store_alone("SQLite", engine, 2_000_000, matched=False)
        record_path("SQLite", engine)
        engine.dispose()


if __name__ == "__main__":
    main()
