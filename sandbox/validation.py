"""Wiraya's published rules for an EnqueueCommunications request, as the sandbox checks them."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

PROJECT_TYPES = frozenset({"SMSProject", "WhatsappProject", "VoiceProject"})
CONTENT_TYPES = PROJECT_TYPES | {"SMSFromAlpha"}
MAX_SENDER_LENGTH = 11

# MSISDN: country code and national number; digits only, no leading zero or "+"; E.164 <= 15.
_MSISDN = re.compile(r"[1-9][0-9]{6,14}")
# ISO 8601 in UTC with a trailing Z, seconds and fractions optional.
_UTC_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,7})?)?Z")


class InvalidRequest(ValueError):
    """The request as a whole is malformed: the server answers 400 with this reason."""


def communications_of(body: object) -> list[Any]:
    """The request's communications array, or InvalidRequest when the envelope is malformed."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    communications = body.get("communications")
    if not isinstance(communications, list):
        raise InvalidRequest("communications: required, must be an array")
    return communications


def client_message_id_of(item: object, index: int) -> str:
    """The item's clientMessageId; without one a result cannot be keyed, so the request fails."""
    if not isinstance(item, dict):
        raise InvalidRequest(f"communications[{index}]: must be an object")
    client_message_id = item.get("clientMessageId")
    if not isinstance(client_message_id, str) or not client_message_id:
        raise InvalidRequest(
            f"communications[{index}].clientMessageId: required, a non-empty string"
        )
    return client_message_id


def message_error(item: Mapping[str, Any]) -> str | None:
    """Why one communication (with a valid clientMessageId) is invalid, or None when it is valid."""
    recipient = item.get("recipient")
    if not isinstance(recipient, str) or not _MSISDN.fullmatch(recipient):
        return (
            "recipient: must be an MSISDN (country code and number, digits only, e.g. 46701234567)"
        )
    content = item.get("content")
    if not isinstance(content, dict):
        return "content: required, must be an object"
    return content_error(content)


def content_error(content: Mapping[str, Any]) -> str | None:
    """Why a content object is invalid, or None; `$type` must come first, as Newtonsoft requires."""
    if "$type" not in content:
        return "content.$type: required"
    if next(iter(content)) != "$type":
        return "content.$type: must be the first property of content"
    kind = content["$type"]
    check = _CHECKS.get(kind) if isinstance(kind, str) else None
    if check is None:
        return f"content.$type: unknown type {kind!r}, expected one of {sorted(CONTENT_TYPES)}"
    return check(content)


def _project_error(content: Mapping[str, Any]) -> str | None:
    """The *Project types: projectId, placeholders and an optional nextAttemptUtc."""
    project_id = content.get("projectId")
    if not isinstance(project_id, int) or isinstance(project_id, bool):
        return "content.projectId: required, an integer"
    placeholders = content.get("placeholders")
    if not isinstance(placeholders, list) or not all(isinstance(p, str) for p in placeholders):
        return "content.placeholders: required, an array of strings"
    next_attempt = content.get("nextAttemptUtc")
    if next_attempt is not None and not (
        isinstance(next_attempt, str) and _UTC_TIMESTAMP.fullmatch(next_attempt)
    ):
        return "content.nextAttemptUtc: must be an ISO 8601 date in UTC ending in Z"
    return None


def _alpha_error(content: Mapping[str, Any]) -> str | None:
    """SMSFromAlpha: a sender of at most 11 characters and a text."""
    sender = content.get("sender")
    if not isinstance(sender, str) or not sender:
        return "content.sender: required, a non-empty string"
    if len(sender) > MAX_SENDER_LENGTH:
        return f"content.sender: must not exceed {MAX_SENDER_LENGTH} characters"
    text = content.get("text")
    if not isinstance(text, str) or not text:
        return "content.text: required, a non-empty string"
    return None


_CHECKS: dict[str, Callable[[Mapping[str, Any]], str | None]] = {
    **dict.fromkeys(PROJECT_TYPES, _project_error),
    "SMSFromAlpha": _alpha_error,
}
