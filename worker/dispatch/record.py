"""The record: every claimed row's outcome in one statement, guarded against stale workers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, text

from models import OutboxMessage, Status


@dataclass(frozen=True)
class RowResult:
    """What one claimed row becomes; written for the whole batch by ``record``."""

    id: int
    claimed_attempts: int
    status: Status
    attempts: int
    next_attempt_at: datetime | None = None
    tracking_id: str | None = None
    last_error: str | None = None


# -- record -- Write every claimed row's result in one statement. The guard (still
# sending, same attempt number as at claim) stops a worker whose lease ended from
# overwriting the newer claim of another. Returns the ids it wrote.
_RECORD_UPDATE = """
UPDATE outbox_messages AS m SET
    status = v.status,
    attempts = v.attempts,
    next_attempt_at = coalesce(v.next_attempt_at, m.next_attempt_at),
    locked_until = NULL,
    tracking_id = coalesce(v.tracking_id, m.tracking_id),
    last_error = v.last_error,
    accepted_at = CASE WHEN v.status = 'accepted' THEN :now ELSE m.accepted_at END,
    updated_at = :now"""
_RECORD_GUARD = "WHERE m.id = v.id AND m.status = 'sending' AND m.attempts = v.claimed_attempts"
# PostgreSQL reads the results as a typed record set from one jsonb parameter ...
RECORD_POSTGRES = f"""{_RECORD_UPDATE}
FROM jsonb_to_recordset(CAST(:results AS jsonb)) AS v(
    id bigint, claimed_attempts integer, status text, attempts integer,
    next_attempt_at timestamptz, tracking_id text, last_error text)
{_RECORD_GUARD}
RETURNING m.id"""
# ... and SQLite from the same JSON through json_each (its RETURNING takes no alias).
RECORD_SQLITE = f"""
WITH v AS (
    SELECT value ->> 'id' AS id, value ->> 'claimed_attempts' AS claimed_attempts,
           value ->> 'status' AS status, value ->> 'attempts' AS attempts,
           value ->> 'next_attempt_at' AS next_attempt_at,
           value ->> 'tracking_id' AS tracking_id, value ->> 'last_error' AS last_error
    FROM json_each(:results)){_RECORD_UPDATE}
FROM v
{_RECORD_GUARD}
RETURNING id"""


def record(connection: Connection, results: Sequence[RowResult], *, now: datetime) -> set[int]:
    if not results:
        return set()
    is_sqlite = connection.dialect.name == "sqlite"
    payload = json.dumps([_result_json(result, is_sqlite) for result in results])
    sql = RECORD_SQLITE if is_sqlite else RECORD_POSTGRES
    statement = text(sql).bindparams(bindparam("now", type_=OutboxMessage.updated_at.type))
    return set(connection.scalars(statement, {"results": payload, "now": now}))


def _result_json(result: RowResult, is_sqlite: bool) -> dict[str, Any]:
    return {
        "id": result.id,
        "claimed_attempts": result.claimed_attempts,
        "status": result.status.value,
        "attempts": result.attempts,
        "next_attempt_at": _timestamp(result.next_attempt_at, is_sqlite),
        "tracking_id": result.tracking_id,
        "last_error": result.last_error,
    }


def _timestamp(value: datetime | None, is_sqlite: bool) -> str | None:
    """A timestamp as each database compares it: SQLite stores naive UTC text."""
    if value is None:
        return None
    value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(sep=" ") if is_sqlite else value.isoformat()
