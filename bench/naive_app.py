"""The naive approach, for comparison only: one Celery task and one API call per message.

What a first version usually does: the producer queues a task per message; the task reads the
row, sends it alone, and writes the answer back. Celery's defaults otherwise. bench_drain.py
runs it as ``celery -A naive_app worker`` (bench/ on PYTHONPATH) on the outbox's backlog.
"""

from __future__ import annotations

import functools
import os
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from celery import Celery
from sqlalchemy import Engine, Table, select, update

from models import OutboxMessage
from worker.database import engine_for
from worker.wiraya.client import WirayaClient
from worker.wiraya.results import Accepted, Answered, Communication

QUEUE = "naive"
TASK = "naive.send"
outbox = cast(Table, OutboxMessage.__table__)

app = Celery("naive", broker=os.environ.get("CELERY_BROKER_URL", "redis://localhost:6379/0"))
app.conf.update(task_default_queue=QUEUE, task_ignore_result=True)


@functools.cache
def client() -> WirayaClient:
    return WirayaClient(os.environ["WIRAYA_BASE_URL"], "naive", timedelta(seconds=30))


def engine() -> Engine:
    return engine_for(os.environ["OUTBOX_DATABASE_URL"])


@app.task(name=TASK)
def send(message_id: int) -> None:
    """Read one row, send it in a request of its own, store the answer."""
    query = select(outbox.c.client_message_id, outbox.c.recipient, outbox.c.content)
    with engine().begin() as connection:
        row = connection.execute(query.where(outbox.c.id == message_id)).one()
    content: Any = row.content
    result = client().send([Communication(row.client_message_id, row.recipient, content)])
    outcome = result.outcomes.get(row.client_message_id) if isinstance(result, Answered) else None
    values: dict[str, Any] = {"attempts": outbox.c.attempts + 1, "updated_at": datetime.now(UTC)}
    if isinstance(outcome, Accepted):
        accepted = {"status": "accepted", "tracking_id": outcome.tracking_id}
        values.update(accepted, accepted_at=datetime.now(UTC))
    else:
        values.update(last_error=str(outcome or result))
    with engine().begin() as connection:
        connection.execute(update(outbox).where(outbox.c.id == message_id).values(values))
