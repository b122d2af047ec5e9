"""The EnqueueCommunications wire format: the request body, and what an HTTP answer means.

A 400 is the API's validation answer only when its body is the API's own JSON; a page from a
proxy or firewall (HTML, plain text, empty) is a request-level failure like a 502. "Too large"
comes only from the API's JSON `{"bulkItemLimitExceeded": true}` (too many messages) or a 413
(too many bytes), never from words in a body: nginx's "400 Request Header Or Cookie Too Large"
says nothing about the batch.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from models.text import MAX_TEXT_LENGTH, clean
from worker.clock import utc_now
from worker.errors import NotJson
from worker.wiraya.answers import REASON_FIELDS, read_results
from worker.wiraya.json_reader import is_object, kind, member, members, parse
from worker.wiraya.results import (
    BadRequest,
    BatchLimit,
    BatchTooLarge,
    Communication,
    RateLimited,
    SendResult,
    ServerError,
    Unauthorized,
)

MAX_ANSWER_BYTES = 16 * 1024 * 1024  # 10,000 results take about 4 MB; beyond this, not read
_TEXT_PREFIX = 64 * 1024  # of an error body, the part a reason is taken from
_NOT_PARSED = object()


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
    if len(body) > MAX_ANSWER_BYTES:
        limit = MAX_ANSWER_BYTES // (1024 * 1024)
        return ServerError(
            f"HTTP {status} with an answer larger than {limit} MiB: not read", status
        )
    try:
        answer = parse(body)
    except NotJson as exc:
        answer, why = _NOT_PARSED, str(exc)
    if 200 <= status < 300:
        if answer is _NOT_PARSED:
            text = _error_text(body, answer)
            return ServerError(
                f"HTTP {status} with a body that is not JSON ({why}): {text}", status
            )
        return read_results(status, answer, sent_ids)
    return _request_failure(status, headers, body, answer)


def _request_failure(
    status: int, headers: Mapping[str, str], body: bytes, answer: object
) -> SendResult:
    text = _error_text(body, answer)
    if status in (401, 403):
        return Unauthorized(f"HTTP {status}: {text}", status)
    if status == 429:
        retry_after = parse_retry_after(_header(headers, "Retry-After"))
        return RateLimited(f"HTTP 429: {text}", retry_after)
    if status == 413:
        return BatchTooLarge(f"HTTP 413: {text}", limit=BatchLimit.BYTES)
    if status in (400, 422):
        if not (is_object(answer) or isinstance(answer, str)):
            what = "not JSON" if answer is _NOT_PARSED else f"JSON {kind(answer)}"
            return ServerError(f"HTTP {status} not from the API ({what}): {text}", status)
        if is_object(answer) and member(members(answer)[0], "bulkItemLimitExceeded") is True:
            return BatchTooLarge(f"HTTP {status}: {text}", limit=BatchLimit.ITEMS)
        return BadRequest(text)
    if status >= 500:
        return ServerError(f"HTTP {status}: {text}", status)
    return ServerError(f"unexpected HTTP {status}: {text}", status)


def parse_retry_after(value: str | None, now: datetime | None = None) -> timedelta | None:
    """Retry-After as a duration: delay-seconds or an HTTP date; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        seconds = None
    if seconds is not None:
        try:
            return timedelta(seconds=max(0.0, seconds))
        except OverflowError:  # "1e30", "inf": no answer this client waits for
            return None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(timedelta(0), moment - (now or utc_now()))


def _error_text(body: bytes, answer: object) -> str:
    """An error body as one line: the API's JSON message, an HTML page's title, or the text."""
    if is_object(answer):
        said = _json_message(answer)
        if said:
            return said
    elif isinstance(answer, str) and answer.strip():
        return clean(answer)
    text = body[:_TEXT_PREFIX].decode("utf-8", "replace").strip()
    if not text:
        return "(empty body)"
    if text.startswith("<"):
        title = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        return clean(f"HTML page: {title.group(1) if title else text}")
    return clean(text)


def _json_message(answer: Any) -> str:
    """The reason fields of a JSON error object, and ASP.NET's validation errors field by field."""
    fields, _ = members(answer)
    parts = [value for name in REASON_FIELDS if isinstance(value := member(fields, name), str)]
    errors = member(fields, "errors")
    if errors is None:
        errors = member(fields, "modelState")
    if is_object(errors):
        for name, messages in errors:
            said = [m for m in messages if isinstance(m, str)] if isinstance(messages, list) else []
            if isinstance(messages, str):
                said = [messages]
            if said:
                parts.append(f"{name}: {', '.join(said)}")
            if sum(map(len, parts)) > MAX_TEXT_LENGTH:
                break
    elif isinstance(errors, list):
        parts += [error for error in errors if isinstance(error, str)]
    return clean("; ".join(part for part in parts if part.strip()))


def _header(headers: Mapping[str, str], name: str) -> str | None:
    if name in headers:
        return headers[name]
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)
