"""The screen: which claimed rows can be sent, as what, and why the others cannot.

Rows inserted by plain SQL skipped the producer's checks, and on SQLite a column may hold
anything at all. Whatever the database hands back, a row that cannot be sent fails alone, with
the reason; nothing here raises for one row's content.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from models import (
    DEFAULT_LIMITS,
    InvalidMessage,
    MessageLimits,
    decode_stored_content,
    screen_stored,
)
from models.tenant import checked as checked_tenant
from worker.dispatch.claim import ClaimedRow
from worker.wiraya.results import Communication

# The reason a message draws when it alone fails every request it is in
# (docs/sending-gate.md#one-bad-message-holds-nothing-back).
ISOLATED = "isolated: every request holding this message failed while others were answered"


class Outgoing(NamedTuple):
    """A claimed row the API can take, with what decides how and when it is sent (a named
    tuple: one is built for every row sent)."""

    id: int  # the row's: a field, not a property, as it is read several times for every row
    row: ClaimedRow
    communication: Communication
    expires_at: datetime | None
    suspicion: int  # requests holding it that failed without an answer: above 0, a suspect
    tenant: str = ""  # the sender it goes out for (its key): the default tenant when ""

    @property
    def order(self) -> tuple[int, int]:
        """Least suspected first, then oldest: the order suspects go out, and probes are picked."""
        return self.suspicion, self.row.id


@dataclass(frozen=True)
class Unsendable:
    """A claimed row that fails without being sent, and why."""

    row: ClaimedRow
    reason: str


@dataclass(frozen=True)
class Screened:
    """A claimed batch sorted into what goes out and what fails at once."""

    outgoing: list[Outgoing]
    unsendable: list[Unsendable]


def screen(
    rows: list[ClaimedRow],
    *,
    now: datetime,
    max_age: timedelta,
    limits: MessageLimits = DEFAULT_LIMITS,
) -> Screened:
    """Sort claimed rows into sendable messages and failures (invalid, expired)."""
    outgoing: list[Outgoing] = []
    unsendable: list[Unsendable] = []
    for row in rows:
        verdict = _screen_row(row, now=now, max_age=max_age, limits=limits)
        if isinstance(verdict, Outgoing):
            outgoing.append(verdict)
        else:
            unsendable.append(Unsendable(row, verdict))
    return Screened(outgoing, unsendable)


def _screen_row(
    row: ClaimedRow, *, now: datetime, max_age: timedelta, limits: MessageLimits
) -> Outgoing | str:
    try:
        expires_at = _moment(row.expires_at, "expires_at")
        first_due = _moment(row.first_due_at, "first_due_at")
        if expires_at is not None and expires_at <= now:
            return f"expired: not accepted by its expires_at ({expires_at:%Y-%m-%d %H:%M:%S} UTC)"
        if first_due is not None and first_due < now - max_age:
            return f"expired: not accepted within {max_age} of falling due"
        stored = screen_stored(
            _text(row.client_message_id, "client_message_id"),
            _text(row.recipient, "recipient"),
            decode_stored_content(row.content, limits),
            limits,
        )
        communication = Communication(*stored)
        suspicion = _count(row.suspicion, "suspicion")
        tenant = checked_tenant(_text(row.tenant, "tenant"))
    except InvalidMessage as problem:
        return f"invalid: {problem}"
    except Exception as error:  # whatever else a raw row can make a parser do: it fails alone
        return f"invalid: the row cannot be read ({type(error).__name__})"
    return Outgoing(row.id, row, communication, expires_at, suspicion, tenant)


def _count(value: object, field: str) -> int:
    """A count column's value (on SQLite a raw row may hold anything in it)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidMessage(field, f"must be a whole number, not {type(value).__name__}")
    if value < 0:
        raise InvalidMessage(field, f"must be at least 0, not {value}")
    return value


def _text(value: object, field: str) -> str:
    """A text column's value as text (SQLite hands back bytes for the worker to decode)."""
    if type(value) is str:  # PostgreSQL's, and every producer's: the usual case first
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidMessage(field, "is not UTF-8 text") from None
    if not isinstance(value, str):
        raise InvalidMessage(field, f"must be text, not {type(value).__name__}")
    return value


def _moment(value: object, field: str) -> datetime | None:
    """A timestamp column's value as aware UTC (on SQLite it comes back as text)."""
    if value is None or isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(_text(value, field))
        except ValueError:
            raise InvalidMessage(field, f"{value!r} is not a time") from None
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# A request is not started with less time than this before its deadline.
MIN_REQUEST_WINDOW = timedelta(milliseconds=500)


def drop_expiring(batch: list[Outgoing], now: datetime, expired: dict[int, str]) -> list[Outgoing]:
    """Messages whose expiry comes too soon for any request are left out, as ``expired``."""
    keep = []
    for outgoing in batch:
        expires_at = outgoing.expires_at
        if expires_at is not None and expires_at - now < MIN_REQUEST_WINDOW:
            expired[outgoing.id] = (
                f"expired: no request could end before its expires_at "
                f"({expires_at:%Y-%m-%d %H:%M:%S} UTC)"
            )
        else:
            keep.append(outgoing)
    return keep
