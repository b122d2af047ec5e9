"""The sending gate under a rate limit and after an outage: how it fits, how fast it comes back.

1. Rate-limit fit: the sandbox admits 1 request/s (a token bucket) and answers 429 with
   Retry-After: 5 above it; a backlog of 1-message batches (fixed: OUTBOX_BATCH_SIZE_MAX=1)
   drains through real worker and beat processes with no OUTBOX_RATE_LIMIT: the rate is learnt.
   Printed: useful requests/s against the limit (after the first 429, when the learning
   starts), and 429s as a share of answers.
2. Recovery: the API is down for 30 s while the circuit opens, then comes back; printed: the
   time from its return to the first accepted message, with the default probe interval.

Run: .venv/bin/python bench/bench_gate.py [--requests 120] [--outage-seconds 30]"""

from __future__ import annotations

import argparse
import time
from contextlib import ExitStack

import support
from sqlalchemy import text
from sqlalchemy.orm import Session

from models import NewMessage, SMSProject, enqueue_many
from sandbox.testing import SandboxAdmin
from worker.database import make_engine

DATABASE = "outbox_bench_gate"


def messages(prefix: str, count: int) -> list[NewMessage]:
    content = SMSProject(project_id=123, placeholders=["John", "Order"])
    return [
        NewMessage.create(
            client_message_id=f"{prefix}-{n:06d}",
            recipient=f"4670{1_000_000 + n:07d}",
            content=content,
        )
        for n in range(count)
    ]


def enqueue(url: str, prefix: str, count: int) -> None:
    engine = make_engine(url)
    with Session(engine) as session, session.begin():
        enqueue_many(session, messages(prefix, count))
    engine.dispose()


def accepted(url: str) -> int:
    engine = make_engine(url)
    with engine.connect() as connection:
        count = int(
            connection.scalar(
                text("SELECT count(*) FROM outbox_messages WHERE status = 'accepted'")
            )
            or 0
        )
    engine.dispose()
    return count


def rate_fit(requests: int) -> str:
    with ExitStack() as stack:
        url = stack.enter_context(support.scratch_database(DATABASE))
        redis = stack.enter_context(support.redis_server())
        api = stack.enter_context(support.sandbox("--rate-limit", "1", "--retry-after", "5"))
        admin = SandboxAdmin(api.url)
        env = support.outbox_env(
            url, redis.url, api.url, OUTBOX_BATCH_SIZE="1", OUTBOX_BATCH_SIZE_MAX="1"
        )
        stack.enter_context(support.celery_worker(env, concurrency=None))
        stack.enter_context(support.celery_beat(env))
        enqueue(url, "rate", requests)
        support.wait_for(lambda: admin.stats()["rate_limited"] > 0, timeout=60, what="a 429")
        learning_from, answered_then = time.monotonic(), admin.stats()["by_status"].get("200", 0)
        support.wait_for(lambda: accepted(url) >= requests, timeout=600, what="the drain")
        seconds = time.monotonic() - learning_from
        stats = admin.stats()
    answers = stats["by_status"].get("200", 0)
    refused = stats["rate_limited"]
    useful = (answers - answered_then) / seconds
    return (
        f"rate-limit fit (limit 1 request/s, Retry-After 5 s, learnt): {useful:.2f} useful "
        f"requests/s after the first 429 ({useful:.0%} of the limit); {refused} 429s for "
        f"{answers} answers ({refused / max(answers, 1):.1%}); {seconds:.0f} s"
    )


def recovery(outage: float) -> str:
    with ExitStack() as stack:
        url = stack.enter_context(support.scratch_database(DATABASE))
        redis = stack.enter_context(support.redis_server())
        api = stack.enter_context(support.sandbox("--latency-ms", "20"))
        admin = SandboxAdmin(api.url)
        env = support.outbox_env(url, redis.url, api.url)
        stack.enter_context(support.celery_worker(env, concurrency=None))
        stack.enter_context(support.celery_beat(env))
        admin.set_faults(outage=True)
        enqueue(url, "outage", 2_000)
        time.sleep(outage)
        admin.set_faults(outage=False)
        back = time.monotonic()
        support.wait_for(
            lambda: accepted(url) > 0, timeout=120, what="the first accepted", every=0.05
        )
        first = time.monotonic() - back
        support.wait_for(lambda: accepted(url) >= 2_000, timeout=300, what="the backlog")
        drained = time.monotonic() - back
        requests = admin.stats()["during_outage"]
    return (
        f"recovery after a {outage:.0f} s outage (default OUTBOX_PROBE_INTERVAL_SECONDS=10): "
        f"first accepted {first:.1f} s after the API's return, backlog of 2,000 drained in "
        f"{drained:.1f} s; {requests} requests during the outage"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=120)
    parser.add_argument("--outage-seconds", type=float, default=30.0)
    args = parser.parse_args()
    support.heading("the sending gate: rate-limit fit and recovery after an outage")
    print(rate_fit(args.requests), flush=True)
    print(recovery(args.outage_seconds), flush=True)


if __name__ == "__main__":
    main()
