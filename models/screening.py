"""Screening a row as stored: raw SQL skipped the producer, so the dispatcher checks it here.

The same rules as the producer's (one implementation: ``NewMessage.create`` and this module
call the same functions), plus what only a stored row can hold: JSON nested thousands deep,
numbers beyond 64 bits, text that is not JSON. Whatever the input, the only exception is
InvalidMessage, whose text is short and printable (it goes into ``last_error``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from models.content import parse_content
from models.errors import InvalidMessage
from models.limits import DEFAULT_LIMITS, MessageLimits
from models.message import client_message_id_of
from models.recipient import normalize_recipient
from models.text import kind
from models.well_formed import api_form

# What orjson says when it cannot encode a value, and what that means for a message.
_ENCODING_PROBLEMS = {
    "Recursion limit reached": "is nested too deeply",
    "Dict key must be str": "field names must be strings",
    "Integer exceeds 64-bit range": "holds a number beyond 64 bits",
    "str is not valid UTF-8: surrogates not allowed": "holds a lone surrogate, not valid Unicode",
}
_DECODING_PROBLEMS = {"depth limit exceeded": "is nested too deeply"}
# Text this much longer than the message limit is refused before decoding: jsonb's text form
# adds spaces, so a message at the limit reads back a little longer than it was sent.
_TEXT_SLACK = 2


class StoredMessage(NamedTuple):
    """A stored row as the API takes it: the id, the MSISDN, the canonical content."""

    client_message_id: str
    recipient: str
    content: dict[str, Any]


def screen_stored(
    client_message_id: object,
    recipient: object,
    content: object,
    limits: MessageLimits = DEFAULT_LIMITS,
) -> StoredMessage:
    """The row as sent (content in canonical form: ``$type`` first, API names, UTC dates), or
    InvalidMessage naming the field; ``content`` is the column's value as decoded."""
    try:
        if not isinstance(client_message_id, str):  # the producer's None means "make one up"
            raise InvalidMessage(
                "client_message_id", f"must be a string, got {kind(client_message_id)}"
            )
        identifier = client_message_id_of(client_message_id)
        number = normalize_recipient(recipient)
        canonical = _canonical(content, limits)
        limits.check_size(identifier, number, canonical)
    except InvalidMessage:
        raise
    except Exception as unforeseen:  # the promise to the dispatcher: nothing else escapes
        raise InvalidMessage(
            "content", f"cannot be screened ({type(unforeseen).__name__})"
        ) from None
    return StoredMessage(identifier, number, canonical)


def decode_stored_content(text: object, limits: MessageLimits = DEFAULT_LIMITS) -> object:
    """The content column's text (or bytes, from a SQLite BLOB) decoded as JSON, or
    InvalidMessage("content", why): not JSON, not UTF-8, nested too deeply, far too large."""
    if text is None:
        raise InvalidMessage("content", "is missing")
    if not isinstance(text, str | bytes):
        raise InvalidMessage("content", f"must be JSON text, got {kind(text)}")
    if len(text) > _TEXT_SLACK * limits.message_bytes:
        unit = "characters" if isinstance(text, str) else "bytes"
        raise InvalidMessage(
            "content",
            f"is {len(text)} {unit} of JSON text, far over the limit of "
            f"{limits.message_bytes} bytes",
        )
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as problem:
        reason = str(problem).split(":", 1)[0]
        raise InvalidMessage(
            "content", _DECODING_PROBLEMS.get(reason, f"is not JSON ({reason})")
        ) from None


def _canonical(content: object, limits: MessageLimits) -> dict[str, Any]:
    """The content as the API takes it. Its size is checked first, as stored: orjson refuses
    what cannot be JSON (nesting past 254 levels, non-string keys, huge numbers) at C speed,
    and nothing larger than a message may be reaches the slower field-by-field checks."""
    if not isinstance(content, dict):
        raise InvalidMessage("content", f"must be an object with $type, got {kind(content)}")
    try:
        size = len(orjson.dumps(content))
    except orjson.JSONEncodeError as problem:
        raise InvalidMessage("content", _encoding_problem(str(problem))) from None
    if size > limits.message_bytes:
        raise InvalidMessage(
            "content", f"is {size} bytes of JSON; the limit is {limits.message_bytes}"
        )
    api = api_form(content, limits)  # the usual shapes without building a model
    if api is not None:
        return api
    parsed = parse_content(content)
    parsed.check_limits(limits)
    return parsed.to_api()


def _encoding_problem(message: str) -> str:
    if message in _ENCODING_PROBLEMS:
        return _ENCODING_PROBLEMS[message]
    if message.startswith("Type is not JSON serializable: "):
        return f"holds a {message.rsplit(': ', 1)[-1]} value, which is not JSON"
    return "cannot be encoded as JSON"
