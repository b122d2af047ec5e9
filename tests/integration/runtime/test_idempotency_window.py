"""The idempotency window: a client_message_id is refused as long as its row exists.

Beat's prune deletes accepted rows OUTBOX_RETENTION_SECONDS after they were accepted; from
then on the same id is a new message. docs/producing.md states the window and how to lengthen it.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from models import DuplicateMessage, Status, enqueue
from models.outbox import OutboxMessage
from worker.clock import utc_now
from worker.runtime.housekeeping import Housekeeping
from worker.settings import DatabaseSettings

CONTENT = {"$type": "SMSProject", "projectId": 1}


def send(engine: Engine, message_id: str) -> None:
    with Session(engine) as session, session.begin():
        enqueue(session, recipient="46701234567", content=CONTENT, client_message_id=message_id)


def accepted_ago(engine: Engine, client_message_id: str, age: timedelta) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(OutboxMessage)
            .where(OutboxMessage.client_message_id == client_message_id)
            .values(status=Status.ACCEPTED, accepted_at=utc_now() - age, tracking_id="t" * 32)
        )


@pytest.mark.parametrize("retention_days", [30, 90])
def test_an_id_is_refused_until_its_row_is_pruned_then_accepted_again(
    engine: Engine, retention_days: int
) -> None:
    retention = timedelta(days=retention_days)
    settings = DatabaseSettings.from_environ(
        {"OUTBOX_RETENTION_SECONDS": str(int(retention.total_seconds()))}
    )
    send(engine, "pruned")
    send(engine, "kept")
    accepted_ago(engine, "pruned", retention + timedelta(minutes=1))
    accepted_ago(engine, "kept", retention - timedelta(minutes=1))

    assert Housekeeping(engine, settings).prune(now=utc_now()) == 1

    send(engine, "pruned")  # past the window: a new message under the same id
    with pytest.raises(DuplicateMessage):
        send(engine, "kept")  # inside it: still a duplicate
