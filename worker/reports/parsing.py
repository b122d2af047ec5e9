"""Reading a report request's body: its reports, and each malformed one refused with its reason.

A body is a JSON array of report objects, or one report object. A report has ``trackingId``
and ``status``, and optionally ``doneAt`` (ISO 8601), ``recipient`` and ``clientMessageId``;
other fields are kept in the stored report and otherwise ignored. A body that is not JSON or
not that shape raises `BodyError`; a malformed report is refused alone, naming the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from models.text import escaped, masked, shown
from worker.errors import BodyError, ReportError

MAX_REPORT_BYTES = 16 * 1024  # a real report is a few hundred bytes, {CONTENT} included
MAX_TEXT = 200  # recipient, clientMessageId
TRACKING_ID = re.compile(r"[0-9A-Za-z-]{1,64}")  # 32 hex digits from Wiraya; GUID forms too
STATUS = re.compile(r"[A-Z][A-Z0-9_]{0,39}")
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
# A doneAt further ahead of the receiver's clock is a wrong value: the later event wins, so a
# time far ahead would pin a message's status against every real report after it.
AHEAD = timedelta(minutes=5)
MAX_DEPTH = 254  # orjson writes no deeper; a real report has one level
JSON_TYPES = {
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
    list: "an array",
    dict: "an object",
}


@dataclass(frozen=True, slots=True)
class Report:
    """One well-formed report, as it will be stored."""

    tracking_id: str
    status: str
    done_at: datetime | None  # when the event happened, if the report says
    raw: str  # the report object as received, JSON text


@dataclass(frozen=True, slots=True)
class Rejected:
    """A malformed report: where it was in the body, why it was refused, and a glimpse of it."""

    index: int
    reason: str
    excerpt: str


@dataclass
class Batch:
    """A body's well-formed reports and its refused ones; ``received`` counts both."""

    received: int = 0
    reports: list[Report] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def parse_body(body: bytes, *, received_at: datetime) -> Batch:
    """The reports of a request's body; BodyError when it is not JSON or not that shape."""
    if not body:
        raise BodyError("the body is empty: send a JSON array of reports")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise BodyError(f"the body is not JSON ({error})") from None
    if isinstance(document, dict):
        items, single = [document], True
    elif isinstance(document, list):
        items, single = document, False
    else:
        raise BodyError(
            "the body must be a JSON array of reports or one report object "
            f"(got {_json_type(document)})"
        )
    batch = Batch(received=len(items))
    for index, item in enumerate(items):
        where = "report" if single else f"reports[{index}]"
        try:
            batch.reports.append(parse_report(item, where, received_at))
        except ReportError as error:
            batch.rejected.append(Rejected(index, str(error), _excerpt(item)))
        except (ValueError, OverflowError, TypeError, RecursionError) as error:
            # Each case is named where it can arise; this keeps any other one to its report.
            reason = f"{where}: cannot be read ({type(error).__name__})"
            batch.rejected.append(Rejected(index, reason, _excerpt(item)))
    return batch


def parse_report(item: Any, where: str, received_at: datetime) -> Report:
    """One report object; ReportError naming ``where`` and the field when it is malformed."""
    if not isinstance(item, dict):
        raise ReportError(f"{where}: not a JSON object (got {_json_type(item)})")
    tracking_id = _required_text(item, "trackingId", where)
    if not TRACKING_ID.fullmatch(tracking_id):
        raise ReportError(
            f"{where}.trackingId: 1 to 64 letters, digits or dashes (got {shown(tracking_id)})"
        )
    status = _required_text(item, "status", where)
    if not STATUS.fullmatch(status):
        raise ReportError(
            f"{where}.status: an upper-case status word such as DELIVERED (got {shown(status)})"
        )
    for name in ("recipient", "clientMessageId"):
        value = _optional_text(item, name, where)
        if value is not None and len(value) > MAX_TEXT:
            raise ReportError(f"{where}.{name}: at most {MAX_TEXT} characters")
    done_at = _done_at(_optional_text(item, "doneAt", where), where, received_at)
    try:
        raw = orjson.dumps(item)
    except orjson.JSONEncodeError:  # its only cause here: arrays or objects 255 levels deep
        raise ReportError(f"{where}: nested deeper than {MAX_DEPTH} levels") from None
    if len(raw) > MAX_REPORT_BYTES:
        raise ReportError(f"{where}: larger than {MAX_REPORT_BYTES} bytes ({len(raw):,})")
    return Report(tracking_id, status, done_at, raw.decode())


def _required_text(item: dict[str, Any], name: str, where: str) -> str:
    value = _optional_text(item, name, where)
    if value is None:
        raise ReportError(f"{where}.{name}: missing")
    return value


def _optional_text(item: dict[str, Any], name: str, where: str) -> str | None:
    value = item.get(name)
    if value is None or isinstance(value, str):
        return value
    raise ReportError(f"{where}.{name}: must be a string (got {_json_type(value)})")


def _done_at(value: str | None, where: str, received_at: datetime) -> datetime | None:
    if not value:  # absent, null, or a placeholder Wiraya rendered empty
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ReportError(
            f"{where}.doneAt: not an ISO 8601 time such as 2026-12-02T10:00:00Z "
            f"(got {shown(value)})"
        ) from None
    try:
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00: before year 1 once in UTC
        raise ReportError(f"{where}.doneAt: out of range in UTC (got {shown(value)})") from None
    if moment < EARLIEST:
        raise ReportError(f"{where}.doneAt: before 2000 (got {shown(value)})")
    if moment > received_at + AHEAD:
        raise ReportError(
            f"{where}.doneAt: more than {AHEAD.seconds // 60} minutes ahead of now "
            f"(got {shown(value)})"
        )
    return moment


def _json_type(value: object) -> str:
    return JSON_TYPES.get(type(value), type(value).__name__)


def _excerpt(item: object, limit: int = 200) -> str:
    """A glimpse of a refused report fit for a log line: its recipient masked, every character
    a terminal could obey escaped, cut short; never raises."""
    if isinstance(item, dict) and isinstance(item.get("recipient"), str):
        item = {**item, "recipient": masked(item["recipient"])}
    try:
        text = orjson.dumps(item).decode()
    except orjson.JSONEncodeError:
        return _json_type(item)
    return escaped(text if len(text) <= limit else text[:limit] + "...")
