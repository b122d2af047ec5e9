"""The producer API: add messages to the outbox inside the caller's own transaction."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models.content import Content, parse_content
from models.errors import DuplicateMessage, InvalidMessage
from models.outbox import OutboxMessage
from models.recipient import normalize_recipient

IfExists = Literal["raise", "return"]
ROWS_PER_STATEMENT = 1_000  # 6 parameters a row stays under SQLite's and PostgreSQL's limits
MAX_CLIENT_MESSAGE_ID = 200


@dataclass(frozen=True)
class NewMessage:
    """A validated message ready for insert; build it with ``NewMessage.create``."""

    client_message_id: str
    recipient: str
    content: Content
    send_at: datetime | None = None

    @classmethod
    def create(
        cls,
        *,
        recipient: object,
        content: Content | Mapping[str, Any],
        client_message_id: object = None,
        send_at: object = None,
    ) -> NewMessage:
        """Validate and normalise every field, or raise InvalidMessage naming the bad one."""
        return cls(
            client_message_id=_client_message_id(client_message_id),
            recipient=normalize_recipient(recipient),
            content=parse_content(content),
            send_at=_send_at(send_at),
        )

    def row(self) -> dict[str, Any]:
        """Column values for the insert; unset columns take the table's defaults."""
        values: dict[str, Any] = {
            "client_message_id": self.client_message_id,
            "recipient": self.recipient,
            "content": self.content.to_api(),
        }
        if self.send_at is not None:
            values["next_attempt_at"] = self.send_at
        return values


def enqueue(
    session: Session,
    *,
    recipient: object,
    content: Content | Mapping[str, Any],
    client_message_id: str | None = None,
    send_at: datetime | None = None,
    if_exists: IfExists = "raise",
) -> OutboxMessage:
    """Insert one message in the session's transaction (no commit) and return its row.

    A client_message_id already in the outbox raises DuplicateMessage; with
    ``if_exists="return"`` the existing row is returned instead, provided it holds the
    same recipient and content (a reused key with other data is always refused).
    """
    message = NewMessage.create(
        recipient=recipient, content=content, client_message_id=client_message_id, send_at=send_at
    )
    statement = _insert_ignoring_duplicates(session).values(message.row()).returning(OutboxMessage)
    row = session.scalars(statement).one_or_none()
    if row is not None:
        return row
    return _existing(session, message, if_exists)


def enqueue_many(
    session: Session,
    messages: Iterable[NewMessage | Mapping[str, Any]],
    *,
    if_exists: IfExists = "raise",
) -> list[str]:
    """Insert many messages with multi-row INSERTs (no commit); return the ids inserted.

    Every message is validated before anything is written. With ``if_exists="raise"`` a
    client_message_id already present raises DuplicateMessage and inserts nothing; with
    ``"return"`` those messages are skipped and left out of the returned list.
    """
    batch = [_as_new_message(item, index) for index, item in enumerate(messages)]
    _refuse_repeats(batch)
    inserted: list[str] = []
    insert = (
        _insert_ignoring_duplicates(session)
        .returning(OutboxMessage.client_message_id)
        .execution_options(insertmanyvalues_page_size=ROWS_PER_STATEMENT)
    )
    with session.begin_nested():  # a savepoint: a refusal below leaves nothing behind
        for rows in _by_columns(message.row() for message in batch):
            # One parameter set per row: SQLAlchemy's "insertmanyvalues" sends them as
            # multi-row INSERT ... RETURNING statements of up to 1,000 rows each.
            inserted.extend(session.scalars(insert, rows))
        if if_exists == "raise" and len(inserted) < len(batch):
            added = set(inserted)
            raise DuplicateMessage(
                [m.client_message_id for m in batch if m.client_message_id not in added]
            )
    return inserted


def _by_columns(rows: Iterable[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Rows grouped by the columns they set: scheduled ones (a send_at) apart from the rest.

    A multi-row INSERT takes its columns from its first row; rows without a send_at must
    keep the column's default, now(), so they go in a statement of their own.
    """
    groups: dict[frozenset[str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(frozenset(row), []).append(row)
    return list(groups.values())


def _insert_ignoring_duplicates(session: Session) -> Insert:
    """INSERT ... ON CONFLICT (client_message_id) DO NOTHING for the session's database."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(OutboxMessage).on_conflict_do_nothing(
            index_elements=["client_message_id"]
        )
    if dialect == "sqlite":
        return sqlite.insert(OutboxMessage).on_conflict_do_nothing(
            index_elements=["client_message_id"]
        )
    raise NotImplementedError(f"the outbox supports PostgreSQL and SQLite, not {dialect}")


def _existing(session: Session, message: NewMessage, if_exists: IfExists) -> OutboxMessage:
    """The row already holding the message's client_message_id, when the caller allows it."""
    if if_exists != "return":
        raise DuplicateMessage([message.client_message_id])
    query = select(OutboxMessage).where(
        OutboxMessage.client_message_id == message.client_message_id
    )
    existing = session.scalars(query).one()
    if existing.recipient != message.recipient or existing.content != message.content.to_api():
        raise DuplicateMessage(
            [message.client_message_id], "already in the outbox with another recipient or content"
        )
    return existing


def _as_new_message(item: NewMessage | Mapping[str, Any], index: int) -> NewMessage:
    """Accept a NewMessage or a mapping of enqueue's keyword arguments."""
    if isinstance(item, NewMessage):
        return item
    if not isinstance(item, Mapping):
        raise InvalidMessage(f"messages[{index}]", "must be a NewMessage or a mapping")
    try:
        return NewMessage.create(**item)
    except InvalidMessage as exc:
        raise InvalidMessage(f"messages[{index}].{exc.field}", exc.reason) from None
    except TypeError as exc:
        raise InvalidMessage(f"messages[{index}]", str(exc)) from None


def _refuse_repeats(batch: Sequence[NewMessage]) -> None:
    """The same client_message_id twice in one call is a caller's mistake, not a no-op."""
    seen: set[str] = set()
    for index, message in enumerate(batch):
        if message.client_message_id in seen:
            raise InvalidMessage(
                f"messages[{index}].client_message_id",
                f"{message.client_message_id!r} appears twice in this call",
            )
        seen.add(message.client_message_id)


def _client_message_id(value: object) -> str:
    if value is None:
        return uuid.uuid4().hex
    if not isinstance(value, str):
        raise InvalidMessage("client_message_id", f"must be a string, got {type(value).__name__}")
    if not value.strip() or len(value) > MAX_CLIENT_MESSAGE_ID:
        raise InvalidMessage(
            "client_message_id", f"must be 1-{MAX_CLIENT_MESSAGE_ID} characters, not blank"
        )
    if not value.isprintable():
        raise InvalidMessage("client_message_id", "must not contain control characters")
    return value


def _send_at(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidMessage("send_at", f"must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        raise InvalidMessage("send_at", "must be timezone-aware (naive times are ambiguous)")
    return value
