"""Tenants: a small tenant's wait beside another's campaign, the campaign's rate beside it
against alone, and the claim's cost with 1, 10 and 1,000 tenants due, on PostgreSQL.

One in-process Dispatcher (as a pool process runs it, no Celery) drains a campaign of bulk
SMSFromAlpha messages of tenant "big", with (then without) a small tenant's bulk messages
enqueued just after it, each tenant under its own key, against the sandbox (its own process,
accepting both keys, 20 ms latency). It prints the small tenant's p50 and p99 from insert to
accepted, and the campaign's messages/s beside the small tenant against alone. Then the claim
alone (a batch of 100, rolled back) on a bulk backlog spread over 1, 10 and 1,000 tenants.

Run: .venv/bin/python bench/bench_tenants.py [--big 300000] [--small 100] [--backlog 20000]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from datetime import UTC, datetime, timedelta

import psycopg
import support

from worker.database import make_engine
from worker.dispatch import claim as claims
from worker.dispatch.dispatcher import Dispatcher
from worker.dispatch.gate import read_gate
from worker.dispatch.turns import TenantTurns
from worker.settings import Settings
from worker.wiraya.client import WirayaClient

RUN = "outbox_bench_tenants"
KEYS = {"big": "key-of-the-big-tenant", "small": "key-of-the-small-tenant"}
TEXT = "Our winter sale starts today: 20% off everything until Sunday."
REPEATS = 30


def _dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def insert(url: str, tenants: list[str], count: int, start: int) -> None:
    """``count`` due bulk texts to distinct recipients, tenants taken in turn."""
    with psycopg.connect(_dsn(url), autocommit=True) as connection:
        connection.execute(
            """
            INSERT INTO outbox_messages (client_message_id, recipient, content, priority, tenant)
            SELECT 't-' || g, '4670' || lpad((1000000 + g)::text, 7, '0'),
                   jsonb_build_object('$type', 'SMSFromAlpha', 'sender', 'Wiraya',
                                      'text', %s::text),
                   2, (%s::text[])[1 + g %% cardinality(%s::text[])]
            FROM generate_series(%s::int, %s::int) AS g
            """,
            (TEXT, tenants, tenants, start, start + count - 1),
        )
        connection.execute("ANALYZE outbox_messages")


def drain(sandbox_url: str, big: int, small: int) -> tuple[float, list[float]]:
    """The campaign's messages/s, and the small tenant's seconds from insert to accepted."""
    with support.scratch_database(RUN) as url:
        insert(url, ["big"], big, 1)
        if small:
            insert(url, ["small"], small, big + 1)
        settings = Settings.from_environ(
            {"OUTBOX_BATCH_SIZE": "100", "OUTBOX_BATCH_SIZE_MAX": "100"},
            OUTBOX_DATABASE_URL=url,
            WIRAYA_BASE_URL=sandbox_url,
            WIRAYA_API_KEYS=",".join(f"{tenant}={key}" for tenant, key in KEYS.items()),
        )
        engine = make_engine(url)
        with WirayaClient.from_settings(settings) as client:
            keyed = functools.partial(WirayaClient.for_key, settings)
            dispatcher = Dispatcher(settings, engine, client, sender_for_key=keyed)
            started, sent = time.monotonic(), 0
            while sent < big + small:
                sent += dispatcher.dispatch().accepted
            seconds = time.monotonic() - started
        with psycopg.connect(_dsn(url)) as connection:
            waits = [
                float(value)
                for (value,) in connection.execute(
                    "SELECT EXTRACT(EPOCH FROM accepted_at - created_at) FROM outbox_messages "
                    "WHERE tenant = 'small'"
                )
            ]
        engine.dispose()
    return big / seconds, sorted(waits)


def claim_cost(backlog: int, tenants: int) -> tuple[float, float]:
    """Milliseconds for the turn's choice (the walk of the tenants due) and for the claim of
    100 of the chosen tenant's rows (rolled back), medians of REPEATS."""
    with support.scratch_database(RUN) as url:
        insert(url, [f"tenant-{n}" for n in range(tenants)], backlog, 1)
        engine = make_engine(url)
        choices, times = [], []
        for _ in range(REPEATS):
            with engine.connect() as connection, connection.begin() as transaction:
                version = read_gate(connection).version
                now = datetime.now(UTC)
                started = time.perf_counter()
                tenant = TenantTurns({}).choose(connection, now)
                choices.append(time.perf_counter() - started)
                started = time.perf_counter()
                rows = claims.claim(
                    connection,
                    limit=100,
                    lease=timedelta(seconds=60),
                    now=now,
                    version=version,
                    token=claims.new_token(),
                    tenant=tenant,
                )
                times.append(time.perf_counter() - started)
                assert rows, "nothing claimed"
                transaction.rollback()
        engine.dispose()
    return statistics.median(choices) * 1000, statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", type=int, default=300_000)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args()
    support.heading(
        f"tenants: a {args.big:,} bulk campaign of one tenant beside {args.small} bulk messages "
        f"of another, one in-process Dispatcher, batches of 100, sandbox {args.latency_ms:g} ms"
    )
    flags = ["--latency-ms", str(args.latency_ms)]
    for key in KEYS.values():
        flags += ["--api-key", key]
    with support.sandbox(*flags) as sandbox:
        alone, _ = drain(sandbox.url, args.big, 0)
        beside, waits = drain(sandbox.url, args.big, args.small)
    p50, p99 = statistics.median(waits), support.percentile(waits, 0.99)
    print(f"  small tenant, insert to accepted: p50 {p50:.2f} s, p99 {p99:.2f} s")
    print(
        f"  the campaign: {beside:,.0f} messages/s beside the small tenant, {alone:,.0f} alone "
        f"({beside / alone:.0%})"
    )
    print(f"  on a {args.backlog:,} bulk backlog, medians of {REPEATS}:")
    for tenants in (1, 10, 1_000):
        choice, claim = claim_cost(args.backlog, tenants)
        print(
            f"    {tenants:>5} tenants due: choosing the tenant {choice:.2f} ms, "
            f"claiming its 100 {claim:.2f} ms"
        )


if __name__ == "__main__":
    main()
