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

from sqlalchemy import Connection, bindparam, select

from models import Status
from models.databases import database_of
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


def _copies(connection: Connection) -> Any:
    database = database_of(connection)
    return select(
        outbox.c.id,
        outbox.c.client_message_id,
        outbox.c.recipient,
        database.raw_text(outbox.c.content).label("content"),
    ).where(
        outbox.c.recipient.in_(bindparam("recipients", expanding=True)),
        outbox.c.id < bindparam("below"),
        outbox.c.status.in_([status.value for status in _STILL_COUNTING]),
        outbox.c.created_at >= bindparam("since", type_=outbox.c.created_at.type),
    )


def earlier_copies(
    connection: Connection, recipients: Collection[str], below: int, since: datetime
) -> dict[tuple[str, str], list[tuple[int, str]]]:
    """(recipient, canonical content) -> [(id, client message id)] of the messages created
    since ``since`` with an id below ``below`` that still count."""
    if not recipients:
        return {}
    parameters = {"recipients": sorted(recipients), "below": below, "since": since}
    found: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for id_, client_message_id, recipient, content in connection.execute(
        _copies(connection), parameters
    ):
        key = canonical(content)
        if key is not None and isinstance(client_message_id, str):
            found.setdefault((recipient, key), []).append((id_, client_message_id))
    return found


def first_copy(
    copies: Mapping[tuple[str, str], list[tuple[int, str]]],
    recipient: str,
    content: Mapping[str, Any],
    own_id: int,
    dropped: Collection[int],
) -> str | None:
    """The client message id of the earliest copy of this message, when there is one."""
    key = canonical(dict(content))
    if key is None:
        return None
    earlier = [
        (id_, cmid)
        for id_, cmid in copies.get((recipient, key), [])
        if id_ < own_id and id_ not in dropped
    ]
    return min(earlier)[1] if earlier else None
