"""The EnqueueCommunications wire format: the request body, and what an HTTP answer means."""

from __future__ import annotations

import email.utils
import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from worker.wiraya.results import (
    Accepted,
    BadRequest,
    BatchTooLarge,
    Communication,
    Delivered,
    MessageOutcome,
    RateLimited,
    Rejected,
    SendResult,
    ServerError,
    Transient,
    Unauthorized,
    Unknown,
)

MAX_REASON_LENGTH = 500
_REASON_FIELDS = ("errorMessage", "error", "message", "reason", "title", "detail")
_TOO_LARGE_HINTS = ("bulkitemlimitexceeded", "too large", "too many communications", "batch size")


# Encoding ---------------------------------------------------------------------------------------


def serialize_content(content: Mapping[str, Any]) -> dict[str, Any]:
    """`content` with `$type` as its first key, as Wiraya's ASP.NET server requires.

    A dict already in that order is returned as it is (not copied); otherwise a reordered copy.
    """
    if type(content) is dict and next(iter(content), None) == "$type":
        return content
    if "$type" not in content:
        return dict(content)
    ordered: dict[str, Any] = {"$type": content["$type"]}
    ordered.update(content)  # `$type` is already in place: update keeps it first
    return ordered


def encode_request(batch: Sequence[Communication]) -> bytes:
    """The EnqueueCommunications request body for a batch, as compact JSON."""
    communications = [
        {
            "clientMessageId": message.client_message_id,
            "recipient": message.recipient,
            "content": serialize_content(message.content),
        }
        for message in batch
    ]
    return orjson.dumps({"communications": communications})


# Decoding ---------------------------------------------------------------------------------------


def interpret_response(
    status: int, headers: Mapping[str, str], body: bytes, sent_ids: Sequence[str]
) -> SendResult:
    """What an HTTP answer to a batch of `sent_ids` means (`headers` looked up case-blind)."""
    if 200 <= status < 300:
        return _delivered(status, body, sent_ids)
    if status in (401, 403):
        return Unauthorized(f"HTTP {status}: {_error_text(body)}", status)
    if status == 429:
        retry_after = parse_retry_after(_header(headers, "Retry-After"))
        return RateLimited(f"HTTP 429: {_error_text(body)}", retry_after)
    if status == 413:
        return BatchTooLarge(f"HTTP 413: {_error_text(body)}", too_many_items=False)
    if status in (400, 422):
        if _says_too_large(body):
            return BatchTooLarge(f"HTTP {status}: {_error_text(body)}")
        return BadRequest(_error_text(body))
    if status >= 500:
        return ServerError(f"HTTP {status}: {_error_text(body)}", status)
    return ServerError(f"unexpected HTTP {status}: {_error_text(body)}", status)


def parse_retry_after(value: str | None, now: datetime | None = None) -> timedelta | None:
    """Retry-After as a duration: delay-seconds or an HTTP date; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    try:
        return timedelta(seconds=max(0.0, float(value.strip())))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(timedelta(0), moment - (now or datetime.now(UTC)))


def _delivered(status: int, body: bytes, sent_ids: Sequence[str]) -> SendResult:
    """A 2xx body's per-message outcomes; an unreadable body is a server error (outcome unknown)."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ServerError(
            f"HTTP {status} with a body that is not JSON: {_error_text(body)}", status
        )
    results = _field(payload, "results") if isinstance(payload, dict) else None
    if not isinstance(results, dict):
        return ServerError(f"HTTP {status} without a results object: {_error_text(body)}", status)
    outcomes: dict[str, MessageOutcome] = {}
    for key in sent_ids:
        entry = results.get(key)
        if type(entry) is dict and entry.get("success") is True:  # the common case, fast
            tracking_id = entry.get("trackingId")
            if type(tracking_id) is str and tracking_id and not tracking_id.isspace():
                outcomes[key] = Accepted(tracking_id)
                continue
        outcomes[key] = message_outcome(entry)
    return Delivered(outcomes)


def message_outcome(entry: object) -> MessageOutcome:
    """One entry of `results` read tolerantly: unknown fields ignored, field case ignored."""
    if entry is None:
        return Unknown("missing from the API's results")
    if type(entry) is not dict:
        return Unknown(f"unreadable result: {_clip(repr(entry))}")
    success = entry["success"] if "success" in entry else _field(entry, "success")
    if success is True:
        tracking_id = entry["trackingId"] if "trackingId" in entry else _field(entry, "trackingId")
        if isinstance(tracking_id, str) and tracking_id.strip():
            return Accepted(tracking_id)
        return Unknown("success without a tracking id")
    if success is not False:
        return Unknown(f"result without a boolean success: {_clip(json.dumps(entry))}")
    transient = _field(entry, "isTransientError")
    reason = _result_reason(entry)
    if transient is False:
        return Rejected(reason)
    if transient is True:
        return Transient(reason)
    return Transient(f"{reason} (isTransientError absent: taken as transient)")


def _field(mapping: Mapping[str, Any], name: str) -> Any:
    """mapping[name], else the first key equal to it ignoring case (PascalCase), else None."""
    if name in mapping:
        return mapping[name]
    lowered = name.lower()
    return next((v for k, v in mapping.items() if k.lower() == lowered), None)


def _result_reason(entry: Mapping[str, Any]) -> str:
    for name in _REASON_FIELDS:
        value = _field(entry, name)
        if isinstance(value, str) and value.strip():
            return _clip(value)
    transient = _field(entry, "isTransientError")
    return f"the API answered success false, isTransientError {json.dumps(transient)}"


def _says_too_large(body: bytes) -> bool:
    """Whether a 400 body says the batch has too many messages (Wiraya: bulkItemLimitExceeded)."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict) and _field(payload, "bulkItemLimitExceeded") is True:
        return True
    text = body.decode("utf-8", "replace").lower()
    return any(hint in text for hint in _TOO_LARGE_HINTS)


def _error_text(body: bytes) -> str:
    """An error body as one trimmed line: a JSON message, an HTML page's title, or the text."""
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return "(empty body)"
    if text.startswith("<"):
        title = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        return _clip(f"HTML page: {title.group(1) if title else text}")
    try:
        payload = json.loads(text)
    except ValueError:
        return _clip(text)
    if isinstance(payload, str):
        return _clip(payload)
    if isinstance(payload, dict):
        parts = [str(payload[k]) for k in _REASON_FIELDS if isinstance(payload.get(k), str)]
        if "errors" in payload:
            parts.append(json.dumps(payload["errors"], ensure_ascii=False))
        if parts:
            return _clip("; ".join(parts))
    return _clip(json.dumps(payload, ensure_ascii=False))


def _clip(text: str) -> str:
    """Whitespace collapsed and cut to MAX_REASON_LENGTH characters."""
    line = " ".join(text.split())
    return line if len(line) <= MAX_REASON_LENGTH else line[: MAX_REASON_LENGTH - 1] + "…"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    if name in headers:
        return headers[name]
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)
