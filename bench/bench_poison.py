"""Poison messages of each kind: how long until one ends failed, and until its batch-mates are in.

A message that draws failures on its own (design.md 5a, 7): a 500 for any request holding it
(sandbox …0000006), no answer at all (…0000008, a hang), the API's own 400 (…0000005), a body
too large for the proxy in front (413). For each kind, two places in the lane:

- head, fresh start: the poison is the oldest due row and the gate has seen no answer yet;
- mid-batch, after answers: the API has answered, the poison sits in the middle of a batch.

The real dispatcher runs in-process on a migrated SQLite outbox against the real sandbox over
HTTP, with the production defaults (timeout 30 s, lease 120 s, batches of 100 (50 for the 413
case, so that a batch fits under the body limit the poison alone exceeds), 10 attempts,
backoff 5-900 s, circuit at 5 failures, probe every 10 s). Time is simulated: a dispatch with
nothing to do moves the clock to the next pause, probe, due time or lease end; a request that
hangs moves it by its whole window. Printed: simulated seconds from the start until the poison
is failed and until the last batch-mate is accepted, requests made, and the poison's reason.

Run: .venv/bin/python bench/bench_poison.py
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime

import support

sys.path.insert(0, str(support.ROOT))  # the dispatch tests' harness: clock, settle, Hanging

from sqlalchemy import Engine, func, select

from models import OutboxMessage, Status
from sandbox.faults import Faults
from sandbox.recipients import INVALID_SUFFIX, POISON_SUFFIX
from sandbox.testing import running_sandbox
from tests.integration.dispatch.harness import (
    ALPHA,
    HANG,
    Hanging,
    Outbox,
    recipient,
)
from worker.database import make_engine
from worker.wiraya.codec import encode_request
from worker.wiraya.results import Communication

MATES = 199
PRODUCTION = {
    "WIRAYA_TIMEOUT_SECONDS": 30,
    "OUTBOX_BATCH_SIZE": 100,
    "OUTBOX_BACKOFF_BASE_SECONDS": 5,
    "OUTBOX_BACKOFF_MAX_SECONDS": 900,
    "OUTBOX_LEASE_SECONDS": 120,
    "OUTBOX_MAX_ATTEMPTS": 10,
    "OUTBOX_CIRCUIT_FAILURES": 5,
    "OUTBOX_PROBE_INTERVAL_SECONDS": 10,
}
# The 413 case: a text as long as an SMS may be, and a body limit it alone exceeds.
LONG_TEXT = {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": "x" * 1_500}
SMALL_BATCH = 8


@dataclass(frozen=True)
class Kind:
    name: str
    recipient: str
    content: dict[str, object]
    faults: Faults
    batch_size: int = 100


def _body_limit() -> int:
    """Bytes that take a batch of ordinary messages but not the long message alone."""
    batch = [Communication(f"m{n}", recipient(n), ALPHA) for n in range(SMALL_BATCH)]
    limit = len(encode_request(batch)) + 64
    alone = encode_request([Communication("m-long", recipient(0), LONG_TEXT)])
    assert len(alone) > limit, (len(alone), limit)
    return limit


KINDS = [
    Kind("5xx", "4670" + POISON_SUFFIX, ALPHA, Faults()),
    Kind("hang", HANG, ALPHA, Faults()),
    Kind("400", "4670" + INVALID_SUFFIX, ALPHA, Faults()),
    Kind("413", recipient(999_999), LONG_TEXT, Faults(max_body_bytes=_body_limit()), SMALL_BATCH),
]


def run(kind: Kind, *, warm: bool) -> str:
    """One scenario; returns its line of figures."""
    with support.scratch_sqlite() as url, running_sandbox(kind.faults, seed=3) as sandbox:
        engine = make_engine(url)
        outbox = Outbox(engine, sandbox)
        settings = {**PRODUCTION, "OUTBOX_BATCH_SIZE": kind.batch_size}
        dispatcher = outbox.dispatcher(**settings)
        dispatcher.sender = Hanging(dispatcher.sender, outbox.clock)
        if warm:
            outbox.enqueue_ordinary(3)
            dispatcher.dispatch_once()
        started = outbox.clock.now
        before = kind.batch_size // 2 if warm else 0
        mates = outbox.enqueue_ordinary(before)
        [poison] = outbox.enqueue(kind.recipient, content=kind.content)
        mates += outbox.enqueue_ordinary(MATES - before)
        summaries = outbox.settle(dispatcher, rounds=2_000)
        row = outbox.row(poison)
        failed = _seconds(row.updated_at, started) if row.status == Status.FAILED else None
        last_mate = _last_accepted(engine, mates, started)
        requests = sum(summary.requests for summary in summaries)
        outbox.close()
        engine.dispose()
    place = "mid-batch, after answers" if warm else "head, fresh start"
    return (
        f"{kind.name:>4}  {place:<25} poison {row.status} after {_shown(failed)}, "
        f"{row.attempts} attempts; last of {MATES} mates accepted after "
        f"{_shown(last_mate)}; {requests} requests; reason: {(row.last_error or '')[:90]}"
    )


def _last_accepted(engine: Engine, mates: list[str], started: datetime) -> float | None:
    """Seconds from ``started`` until the last of ``mates`` was accepted (None: not all were)."""
    chosen = OutboxMessage.client_message_id.in_(mates)
    with engine.connect() as connection:
        latest = connection.scalar(select(func.max(OutboxMessage.accepted_at)).where(chosen))
        missing = connection.scalar(
            select(func.count()).where(chosen, OutboxMessage.status != Status.ACCEPTED)
        )
    return None if missing or latest is None else _seconds(latest, started)


def _seconds(moment: datetime, started: datetime) -> float:
    return (moment - started).total_seconds()


def _shown(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.0f} s"


def main() -> None:
    support.heading("Poison messages: time to failed, time to the batch-mates (simulated s)")
    for kind in KINDS:
        for warm in (False, True):
            print(run(kind, warm=warm), flush=True)


if __name__ == "__main__":
    main()
