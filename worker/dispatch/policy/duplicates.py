"""The duplicate guard: a message whose recipient and content repeat an earlier one's.

An earlier copy is a message with a lower id, the same recipient and the same content (compared
as JSON, whatever its key order or spacing), created within the window and still on its way or
accepted (pending, sending or accepted): the first one stands for both, whatever either's
clientMessageId.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, bindparam, select

from models import Status
from models.databases import DATABASES, Database, database_of
from models.outbox import outbox_messages as outbox

_STILL_COUNTING = (Status.PENDING, Status.SENDING, Status.ACCEPTED)


def canonical(content: object) -> str | None:
    """Content as one comparable text (JSON with sorted keys); None when it is not JSON."""
    if isinstance(content, bytes | bytearray | memoryview):
        content = bytes(content).decode("utf-8", errors="replace")
    if isinstance(content, str):
        try:
            content = json.loads(content)
        except ValueError:
            return None
    try:
        return json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return None


def _copies(database: Database) -> Select[Any]:
    """A batch's recipients' messages that still count, created since the window began."""
    return select(
        outbox.c.id,
        outbox.c.client_message_id,
        outbox.c.recipient,
        database.raw_text(outbox.c.content).label("content"),
    ).where(
        database.one_of(outbox.c.recipient, "recipients"),
        outbox.c.id < bindparam("below"),
        ~database.one_of(outbox.c.id, "batch"),
        outbox.c.status.in_([status.value for status in _STILL_COUNTING]),
        outbox.c.created_at >= bindparam("since", type_=outbox.c.created_at.type),
    )


# Built once per database: it runs for every batch.
COPIES = {database: _copies(database) for database in DATABASES}


def earlier_copies(
    connection: Connection,
    recipients: Collection[str],
    batch: Collection[int],
    below: int,
    since: datetime,
) -> dict[str, list[tuple[int, str, object]]]:
    """recipient -> [(id, client message id, content as stored)] of the messages created since
    ``since`` with an id below ``below`` that still count, the batch's own rows left out (the
    caller has their contents already)."""
    if not recipients:
        return {}
    parameters = {
        "recipients": sorted(recipients),
        "batch": sorted(batch),
        "below": below,
        "since": since,
    }
    found: dict[str, list[tuple[int, str, object]]] = {}
    for id_, client_message_id, recipient, content in connection.execute(
        COPIES[database_of(connection)], parameters
    ):
        if isinstance(client_message_id, str):
            found.setdefault(recipient, []).append((id_, client_message_id, content))
    return found


def first_copy(
    copies: Mapping[str, list[tuple[int, str, object]]],
    recipient: str,
    content: Mapping[str, Any],
    own_id: int,
    dropped: Collection[int],
) -> str | None:
    """The client message id of the earliest copy of this message, when there is one (the
    contents are compared only where the recipient has an earlier message at all)."""
    earlier = sorted(
        (id_, cmid, stored)
        for id_, cmid, stored in copies.get(recipient, [])
        if id_ < own_id and id_ not in dropped
    )
    if not earlier:
        return None
    key = canonical(dict(content))
    for _, cmid, stored in earlier:
        if key is not None and canonical(stored) == key:
            return cmid
    return None
