"""A message as the producer validates it: every field checked and normalised before any SQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from models import sms_text
from models.content import Content, parse_content
from models.errors import InvalidMessage
from models.limits import DEFAULT_LIMITS, MessageLimits
from models.priority import Priority
from models.recipient import normalize_recipient
from models.tenant import checked as checked_tenant
from models.text import identifier_problem, shown
from models.trace_context import checked as checked_trace_context

MAX_CLIENT_MESSAGE_ID = 200
_CHECKED = "_checked"  # set on a NewMessage by NewMessage.create


class MessageOptions(TypedDict, total=False):
    """The optional fields of a message, as keyword arguments of every enqueue function."""

    client_message_id: str | None
    """The idempotency key (the API's clientMessageId); a fresh UUID when not given."""
    send_at: datetime | None
    """An aware datetime: not sent before it."""
    priority: Priority | int
    """Priority.URGENT, NORMAL (the default) or BULK, or 0-2."""
    expires_at: datetime | None
    """An aware datetime: never sent at or after it (failed as expired)."""
    ttl: timedelta | None
    """Instead of expires_at: how long after it is due the message stays worth sending."""
    trace_context: str | None
    """A W3C ``traceparent`` (a space, then a ``tracestate``, optional) to link the message's
    spans to; by default the active OpenTelemetry span's, and none without one."""
    tenant: str
    """The sender the message goes out for (its key, rate and share); "" is the default tenant."""
    max_segments: int | None
    """An SMSFromAlpha text longer than this many SMS parts is refused, with its count."""
    transliterate: bool
    """Replace the usual characters forcing UCS-2 (curly quotes, dashes, ...) with GSM-7 ones."""


@dataclass(frozen=True)
class NewMessage:
    """A validated message ready for insert; build it with ``NewMessage.create``."""

    client_message_id: str
    recipient: str
    content: Content
    send_at: datetime | None = None
    priority: Priority = Priority.NORMAL
    expires_at: datetime | None = None
    trace_context: str | None = None
    tenant: str = ""

    @classmethod
    def create(
        cls,
        *,
        recipient: object,
        content: Content | Mapping[str, Any],
        client_message_id: object = None,
        send_at: object = None,
        priority: object = Priority.NORMAL,
        expires_at: object = None,
        ttl: object = None,
        trace_context: object = None,
        tenant: object = "",
        max_segments: object = None,
        transliterate: bool = False,
        limits: MessageLimits = DEFAULT_LIMITS,
    ) -> NewMessage:
        """Validate and normalise every field, or raise InvalidMessage naming the bad one."""
        identifier = client_message_id_of(client_message_id)
        number = normalize_recipient(recipient)
        parsed = parse_content(content)
        if transliterate:
            parsed = sms_text.transliterated(parsed)
        sms_text.check_segments(parsed, max_segments)
        parsed.check_limits(limits)
        limits.check_size(identifier, number, parsed.to_api())
        due = _send_at(send_at)
        message = cls(
            client_message_id=identifier,
            recipient=number,
            content=parsed,
            send_at=due,
            priority=_priority(priority),
            expires_at=_expiry(expires_at, ttl, due),
            trace_context=checked_trace_context(trace_context),
            tenant=checked_tenant(tenant),
        )
        # Marks what went through these checks: the constructor is public, and enqueue_many
        # validates a message built with it before writing it (see validated_batch).
        object.__setattr__(message, _CHECKED, True)
        return message

    def row(self) -> dict[str, Any]:
        """Column values for the insert; without a send_at the row is due at the database's now."""
        values: dict[str, Any] = {
            "client_message_id": self.client_message_id,
            "recipient": self.recipient,
            "content": self.content.to_api(),
            "priority": int(self.priority),
            "expires_at": self.expires_at,
            "segments": sms_text.segment_count(self.content),
        }
        if self.send_at is not None:
            values["next_attempt_at"] = self.send_at
        if self.trace_context is not None:  # written only while a span is active
            values["trace_context"] = self.trace_context
        if self.tenant:  # the default tenant is the column's default
            values["tenant"] = self.tenant
        return values


def validated_batch(
    messages: Iterable[NewMessage | Mapping[str, Any]], limits: MessageLimits
) -> list[NewMessage]:
    """Every message validated (a NewMessage as it is, a mapping of enqueue's keyword
    arguments through NewMessage.create), errors named ``messages[i].field``."""
    batch = [_as_new_message(item, index, limits) for index, item in enumerate(messages)]
    seen: set[str] = set()
    for index, message in enumerate(batch):
        # The same client_message_id twice in one call is a caller's mistake, not a no-op.
        if message.client_message_id in seen:
            raise InvalidMessage(
                f"messages[{index}].client_message_id",
                f"{shown(message.client_message_id)} appears twice in this call",
            )
        seen.add(message.client_message_id)
    return batch


def _as_new_message(
    item: NewMessage | Mapping[str, Any], index: int, limits: MessageLimits
) -> NewMessage:
    if isinstance(item, NewMessage) and getattr(item, _CHECKED, False):
        return item
    if isinstance(item, NewMessage):  # built by its constructor: nothing checked yet
        item = {field.name: getattr(item, field.name) for field in fields(NewMessage)}
    if not isinstance(item, Mapping):
        raise InvalidMessage(f"messages[{index}]", "must be a NewMessage or a mapping")
    try:
        return NewMessage.create(limits=limits, **item)
    except InvalidMessage as exc:
        raise InvalidMessage(f"messages[{index}].{exc.field}", exc.reason) from None
    except TypeError as exc:  # an unknown or missing keyword
        raise InvalidMessage(f"messages[{index}]", str(exc)) from None


def client_message_id_of(value: object) -> str:
    """The idempotency key: given (1-200 characters, no control character), or a fresh UUID."""
    if value is None:
        return uuid.uuid4().hex
    if not isinstance(value, str):
        raise InvalidMessage("client_message_id", f"must be a string, got {type(value).__name__}")
    if not value.strip() or len(value) > MAX_CLIENT_MESSAGE_ID:
        raise InvalidMessage(
            "client_message_id",
            f"must be 1-{MAX_CLIENT_MESSAGE_ID} characters, not blank (got {len(value)})",
        )
    problem = identifier_problem(value)
    if problem is not None:
        raise InvalidMessage("client_message_id", problem)
    return value


def _priority(value: object) -> Priority:
    if isinstance(value, int) and not isinstance(value, bool):  # True would pass as NORMAL
        try:
            return Priority(value)
        except ValueError:
            pass
    raise InvalidMessage(
        "priority", f"must be Priority.URGENT, NORMAL or BULK (0-2), got {shown(value)}"
    )


def _send_at(value: object) -> datetime | None:
    return None if value is None else _utc("send_at", value)


def _expiry(expires_at: object, ttl: object, send_at: datetime | None) -> datetime | None:
    """When the message stops being worth sending: expires_at, or its ttl from when it is due."""
    if ttl is not None and expires_at is not None:
        raise InvalidMessage("ttl", "give expires_at or ttl, not both")
    now = datetime.now(UTC)
    due = now if send_at is None else max(send_at, now)
    if ttl is not None:
        if not isinstance(ttl, timedelta):
            raise InvalidMessage("ttl", f"must be a timedelta, got {type(ttl).__name__}")
        if ttl <= timedelta(0):
            raise InvalidMessage("ttl", f"must be positive, got {ttl}")
        try:
            return due + ttl
        except OverflowError:
            raise InvalidMessage("ttl", f"{ttl} from {due.isoformat()} is out of range") from None
    if expires_at is None:
        return None
    expires = _utc("expires_at", expires_at)
    if send_at is not None and expires <= send_at:
        raise InvalidMessage("expires_at", f"must be after send_at ({send_at.isoformat()})")
    if expires <= now:
        raise InvalidMessage("expires_at", f"must be after now, got {expires.isoformat()}")
    return expires


def _utc(field: str, value: object) -> datetime:
    """An aware datetime in UTC, as it is stored; refused when UTC cannot hold it."""
    if not isinstance(value, datetime):
        raise InvalidMessage(field, f"must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidMessage(field, "must be timezone-aware (naive times are ambiguous)")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # datetime.max at -05:00, datetime.min at +05:00
        raise InvalidMessage(field, f"{value.isoformat()} is out of range in UTC") from None
