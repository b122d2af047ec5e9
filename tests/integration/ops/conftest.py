"""Fixtures of the operator tooling's tests: a sample outbox and a Redis hash for counters."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from models import OutboxMessage, SMSProject, enqueue_many
from worker.database import make_engine
from worker.dispatch import gate as gates
from worker.dispatch.gate import transitions
from worker.ops import counters


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def counters_url(redis_url: str) -> Iterator[str]:
    """A Redis database of its own for the counters hash, emptied before and after."""
    url = redis_url.rsplit("/", 1)[0] + "/14"
    client = redis.Redis.from_url(url)
    client.delete(counters.COUNTERS_KEY)
    yield url
    client.delete(counters.COUNTERS_KEY)
    client.close()


def fill_sample(engine: Engine) -> None:
    """3 pending (1 due for 10 minutes, 1 retrying, 1 scheduled in an hour; lanes normal,
    normal, bulk), 1 sending under lease, 2 accepted, 1 failed; sending paused by a 503."""
    with Session(engine) as session, session.begin():
        enqueue_many(
            session,
            [
                dict(
                    client_message_id=f"m{n}",
                    recipient="46701234567",
                    content=SMSProject(project_id=1),
                )
                for n in range(1, 8)
            ],
        )
    changes: dict[str, dict[str, Any]] = {
        "m1": {
            "created_at": _now() - timedelta(hours=1),
            "next_attempt_at": _now() - timedelta(minutes=10),
        },
        "m2": {"last_error": "transient", "attempts": 1},
        "m3": {"next_attempt_at": _now() + timedelta(hours=1), "priority": 2},
        "m4": {"status": "sending", "attempts": 1, "locked_until": _now() + timedelta(minutes=2)},
        "m5": {"status": "accepted", "attempts": 1, "tracking_id": "a" * 32, "accepted_at": _now()},
        "m6": {"status": "accepted", "attempts": 1, "tracking_id": "b" * 32, "accepted_at": _now()},
        "m7": {"status": "failed", "attempts": 1, "last_error": "rejected"},
    }
    with engine.begin() as connection:
        for client_message_id, values in changes.items():
            connection.execute(
                update(OutboxMessage)
                .where(OutboxMessage.client_message_id == client_message_id)
                .values(**values)
            )
        gates.read_gate(connection)
        transitions.count_failure_unless_answered_since(
            connection,
            started=_now(),
            now=_now(),
            reason="ServerError",
            pause_until=_now() + timedelta(minutes=5),
            threshold=5,
            probe_at=_now() + timedelta(minutes=5),
        )


def _sample_outbox(url: str) -> Iterator[Engine]:
    engine = make_engine(url)
    fill_sample(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def filled(database_url: str) -> Iterator[Engine]:
    """The sample outbox of ``fill_sample`` (both databases)."""
    yield from _sample_outbox(database_url)


@pytest.fixture
def filled_postgres(postgres_url: str) -> Iterator[Engine]:
    """The sample outbox of ``fill_sample`` on PostgreSQL."""
    yield from _sample_outbox(postgres_url)
