"""How large a message may be: the producer refuses more, the dispatcher fails rows over it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import orjson

from models.errors import InvalidMessage

# An SMS of GSM-7 text carries 160 characters, 153 per part once split; UCS-2 (any character
# outside GSM-7) 70, 67 per part. Ten parts are where operators and providers commonly stop.
GSM7_PART = 153
SMS_PARTS = 10


@dataclass(frozen=True, slots=True)
class MessageLimits:
    """Upper bounds on a message's content, in characters (code points) and encoded bytes.

    The worker builds one from OUTBOX_MAX_* variables; the producer uses DEFAULT_LIMITS
    unless given another.
    """

    text_chars: int = GSM7_PART * SMS_PARTS
    """SMSFromAlpha ``text``: 1,530 characters, ten GSM-7 parts (23 in UCS-2)."""
    placeholder_chars: int = 500
    """One placeholder value: a name, an order number, a time, an address or a link."""
    placeholders_total_chars: int = GSM7_PART * SMS_PARTS
    """All placeholders of a message together: they all go into one SMS, like a text."""
    message_bytes: int = 8_192
    """The message as sent (clientMessageId, recipient, content) in compact UTF-8 JSON.

    Every field at its limit, in 4-byte characters, fits; this bounds what the field limits
    leave open (thousands of placeholders), so that no message makes a batch too large.
    """

    def __post_init__(self) -> None:
        for limit in fields(self):
            value = getattr(self, limit.name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{limit.name}: must be a positive integer, got {value!r}")

    def check_text(self, field: str, value: str) -> None:
        """Refuse a text field longer than ``text_chars``."""
        _at_most(field, len(value), self.text_chars, "has")

    def check_placeholders(self, field: str, values: list[str]) -> None:
        """Refuse a placeholder over ``placeholder_chars``, or all of them over their total."""
        lengths = list(map(len, values))  # the dispatcher's hot path: no Python loop
        longest = max(lengths, default=0)
        if longest > self.placeholder_chars:
            index = next(i for i, n in enumerate(lengths) if n > self.placeholder_chars)
            _at_most(f"{field}.{index}", lengths[index], self.placeholder_chars, "has")
        _at_most(field, sum(lengths), self.placeholders_total_chars, "have", " in all")

    def check_size(
        self, client_message_id: str, recipient: str, content: Mapping[str, Any]
    ) -> None:
        """Refuse a message whose encoded form exceeds ``message_bytes``."""
        size = encoded_size(client_message_id, recipient, content)
        if size > self.message_bytes:
            raise InvalidMessage(
                "content", f"the message is {size} bytes of JSON; the limit is {self.message_bytes}"
            )


DEFAULT_LIMITS = MessageLimits()


def encoded_size(client_message_id: str, recipient: str, content: Mapping[str, Any]) -> int:
    """Bytes the message takes in the request body: compact UTF-8 JSON, as the client sends it."""
    message = {"clientMessageId": client_message_id, "recipient": recipient, "content": content}
    return len(orjson.dumps(message))


def _at_most(field: str, count: int, limit: int, verb: str, scope: str = "") -> None:
    if count > limit:
        raise InvalidMessage(field, f"{verb} {count} characters{scope}; the limit is {limit}")
