"""Helpers for the delivery-report tests: messages the worker has recorded, and reports about them.

Tracking ids are written by the worker's own record statement (`worker.dispatch.record`), so
the trigger that matches early reports is exercised exactly as a dispatch fires it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import uvicorn
from sqlalchemy import Connection, Engine, select, text, update
from sqlalchemy.orm import Session

from models import OutboxMessage, SMSProject, Status, enqueue_many, outbox_delivery_reports
from worker.dispatch.record import RowResult, record
from worker.ops.processes import wait_for
from worker.reports.parsing import Report, parse_body
from worker.reports.server import listen

T0 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


def tracking(number: int) -> str:
    return f"{number:032x}"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def report(
    number: int, status: str = "DELIVERED", done: float | None = 0.0, **extra: Any
) -> Report:
    """A well-formed report about tracking id ``number``, done ``done`` seconds after T0."""
    fields: dict[str, Any] = {"trackingId": tracking(number), "status": status, **extra}
    if done is not None:
        fields["doneAt"] = at(done).isoformat()
    (parsed,) = parse_body(orjson.dumps(fields), received_at=at(3600)).reports
    return parsed


def enqueue(engine: Engine, count: int, *, start: int = 1) -> list[int]:
    """``count`` pending messages m<start>...; returns their ids in order."""
    with Session(engine) as session, session.begin():
        enqueue_many(
            session,
            [
                dict(
                    client_message_id=f"m{n}",
                    recipient="46701234567",
                    content=SMSProject(project_id=1, placeholders=[str(n)]),
                )
                for n in range(start, start + count)
            ],
        )
    with engine.connect() as connection:
        statement = (
            select(OutboxMessage.id)
            .where(
                OutboxMessage.client_message_id.in_([f"m{n}" for n in range(start, start + count)])
            )
            .order_by(OutboxMessage.id)
        )
        return list(connection.scalars(statement))


CLAIM_TOKEN = 7  # the token of the test's claims, as a worker's claim would set one


def claim(engine: Engine, ids: list[int]) -> None:
    """Mark rows as a worker's claim leaves them: sending, first attempt, under a token."""
    with engine.begin() as connection:
        connection.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids))
            .values(status=Status.SENDING, attempts=1, locked_until=at(60), claim_token=CLAIM_TOKEN)
        )


def record_accepted(
    connection: Connection, ids: list[int], numbers: list[int], when: datetime = T0
) -> set[int]:
    """The worker's record of these claimed rows as accepted under tracking(number)."""
    results = [
        RowResult(id=i, status=Status.ACCEPTED, attempts=1, tracking_id=tracking(n))
        for i, n in zip(ids, numbers, strict=True)
    ]
    return record(connection, results, token=CLAIM_TOKEN, now=when)


def accept(engine: Engine, count: int, *, start: int = 1) -> list[int]:
    """``count`` messages claimed and recorded as accepted under tracking(start...)."""
    ids = enqueue(engine, count, start=start)
    claim(engine, ids)
    with engine.begin() as connection:
        record_accepted(connection, ids, list(range(start, start + count)))
    return ids


def delivery(engine: Engine, message_id: int) -> tuple[str | None, datetime | None]:
    with engine.connect() as connection:
        row = connection.execute(
            select(OutboxMessage.delivery_status, OutboxMessage.delivery_status_at).where(
                OutboxMessage.id == message_id
            )
        ).one()
    return row.delivery_status, row.delivery_status_at


def stored_reports(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(outbox_delivery_reports).order_by(outbox_delivery_reports.c.id)
            )
        )


def unmatched_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.scalar(
                text("SELECT count(*) FROM outbox_delivery_reports WHERE message_id IS NULL")
            )
            or 0
        )


RECEIVED_LATER = at(3600)  # reports received an hour after T0, when every message is accepted


@contextmanager
def serving(
    app: Any, port: int | None = None, config: uvicorn.Config | None = None
) -> Iterator[str]:
    """An ASGI application served by uvicorn (on a free port by default, with ``config`` when
    given) in a thread; yields its base URL."""
    sock = listen("127.0.0.1", port or 0)
    server = uvicorn.Server(config or uvicorn.Config(app, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=10, what="server.started")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
