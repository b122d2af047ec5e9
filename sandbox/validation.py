"""Wiraya's published rules for an EnqueueCommunications request, as the sandbox checks them."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from sandbox.recipients import INVALID_SUFFIX

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
    client_message_id = item.get("clientMessageId") if type(item) is dict else None
    if type(client_message_id) is str and client_message_id:
        return client_message_id
    if type(item) is not dict:
        raise InvalidRequest(f"communications[{index}]: must be an object")
    raise InvalidRequest(f"communications[{index}].clientMessageId: required, a non-empty string")


def message_error(item: Mapping[str, Any]) -> str | None:
    """Why one communication (with a valid clientMessageId) is invalid, or None when it is valid."""
    recipient = item.get("recipient")
    if type(recipient) is not str or _MSISDN.fullmatch(recipient) is None:
        return "recipient: must be an MSISDN: country code and number, digits only (46701234567)"
    if recipient.endswith(INVALID_SUFFIX):
        return "recipient: not a valid mobile number (sandbox test recipient ...0000005)"
    content = item.get("content")
    if type(content) is not dict:
        return "content: required, must be an object"
    return content_error(content)


def content_error(content: Mapping[str, Any]) -> str | None:
    """Why a content object is invalid, or None; `$type` must come first, as Newtonsoft requires."""
    if next(iter(content), None) != "$type":
        if "$type" in content:
            return "content.$type: must be the first property of content"
        return "content.$type: required"
    kind = content["$type"]
    check = _CHECKS.get(kind) if type(kind) is str else None
    if check is None:
        return f"content.$type: unknown type {kind!r}, expected one of {sorted(CONTENT_TYPES)}"
    return check(content)


def _project_error(content: Mapping[str, Any]) -> str | None:
    """The *Project types: projectId, placeholders and an optional nextAttemptUtc."""
    if type(content.get("projectId")) is not int:  # JSON booleans are not integers here
        return "content.projectId: required, an integer"
    placeholders = content.get("placeholders")
    if type(placeholders) is not list:
        return "content.placeholders: required, an array of strings"
    for placeholder in placeholders:
        if type(placeholder) is not str:
            return "content.placeholders: required, an array of strings"
    next_attempt = content.get("nextAttemptUtc")
    if next_attempt is not None and (
        type(next_attempt) is not str or _UTC_TIMESTAMP.fullmatch(next_attempt) is None
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
