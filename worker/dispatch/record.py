"""The record: every claimed row's outcome in one statement, guarded against stale workers."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import BigInteger, Connection, bindparam, text

from models import OutboxMessage, Status
from models.text import clean

_TRACKING_ID = re.compile(r"[0-9a-fA-F]{32}")


def is_tracking_id(value: object) -> bool:
    """True for what the API documents as a tracking id: 32 hexadecimal characters."""
    return isinstance(value, str) and _TRACKING_ID.fullmatch(value) is not None


@dataclass(frozen=True)
class RowResult:
    """What one claimed row becomes; written for the whole batch by ``record``."""

    id: int
    status: Status
    attempts: int
    next_attempt_at: datetime | None = None
    tracking_id: str | None = None
    last_error: str | None = None
    reach_evidence: str | None = None  # why it may have reached Wiraya; kept once written
    suspicion: int | None = None  # None: unchanged (a row released unsent keeps its count)


# -- record -- Write every claimed row's result in one statement. The guard (still sending,
# under this claim's token) stops a worker whose lease ended from overwriting the newer claim
# of another, however an operator changed the row meanwhile. Returns the ids it wrote.
_GUARD = "m.status = 'sending' AND m.claim_token = :token"
# PostgreSQL takes the results as one JSON object keyed by row id, parsed once, and looks up
# each row's entry in it (a binary search in jsonb). No join with the results: joining a record
# set built from the parameter let the planner put the table on the outside whenever it
# guessed one sending row, and then rebuild the record set for every row (a record of 500 took
# 100-150 ms instead of 25, and a prepared statement keeps such a plan for good). The rows are
# found by id, through the primary key (or a scan while the table is small): the status test
# is written so that the planner cannot choose the lease index instead, whose dead entries
# grow with every claim until a vacuum.
_RESULT = "r.results -> m.id::text"
RECORD_POSTGRES = f"""
WITH r AS MATERIALIZED (SELECT CAST(:results AS jsonb) AS results)
UPDATE outbox_messages AS m SET
    status = {_RESULT} ->> 'status',
    attempts = CAST({_RESULT} ->> 'attempts' AS integer),
    next_attempt_at = coalesce(
        CAST({_RESULT} ->> 'next_attempt_at' AS timestamptz), m.next_attempt_at),
    locked_until = NULL,
    claim_token = NULL,
    tracking_id = coalesce({_RESULT} ->> 'tracking_id', m.tracking_id),
    last_error = {_RESULT} ->> 'last_error',
    reach_evidence = coalesce(m.reach_evidence, {_RESULT} ->> 'reach_evidence'),
    suspicion = coalesce(CAST({_RESULT} ->> 'suspicion' AS integer), m.suspicion),
    accepted_at = CASE WHEN {_RESULT} ->> 'status' = 'accepted' THEN :now
                  ELSE m.accepted_at END,
    updated_at = :now
FROM r
WHERE m.id = ANY(CAST(:ids AS bigint[]))
  AND coalesce(m.status, '') = 'sending' AND m.claim_token = :token
RETURNING m.id"""
# SQLite reads the same results from one JSON parameter through json_each (its UPDATE ...
# FROM joins by the primary key; its RETURNING takes no alias).
RECORD_SQLITE = f"""
WITH v AS (
    SELECT value ->> 'id' AS id, value ->> 'status' AS status, value ->> 'attempts' AS attempts,
           value ->> 'next_attempt_at' AS next_attempt_at,
           value ->> 'suspicion' AS suspicion,
           value ->> 'tracking_id' AS tracking_id, value ->> 'last_error' AS last_error,
           value ->> 'reach_evidence' AS reach_evidence
    FROM json_each(:results))
UPDATE outbox_messages AS m SET
    status = v.status,
    attempts = v.attempts,
    next_attempt_at = coalesce(v.next_attempt_at, m.next_attempt_at),
    locked_until = NULL,
    claim_token = NULL,
    tracking_id = coalesce(v.tracking_id, m.tracking_id),
    last_error = v.last_error,
    reach_evidence = coalesce(m.reach_evidence, v.reach_evidence),
    suspicion = coalesce(v.suspicion, m.suspicion),
    accepted_at = CASE WHEN v.status = 'accepted' THEN :now ELSE m.accepted_at END,
    updated_at = :now
FROM v
WHERE m.id = v.id AND {_GUARD}
RETURNING id"""
_STATEMENTS = {
    dialect: text(sql).bindparams(
        bindparam("now", type_=OutboxMessage.updated_at.type),
        bindparam("token", type_=BigInteger()),
    )
    for dialect, sql in (("postgresql", RECORD_POSTGRES), ("sqlite", RECORD_SQLITE))
}


def record(
    connection: Connection, results: Sequence[RowResult], *, token: int, now: datetime
) -> set[int]:
    """Write ``results`` for the rows claimed under ``token``; returns the ids written."""
    if not results:
        return set()
    statement = _STATEMENTS[connection.dialect.name]
    parameters = record_parameters(connection.dialect.name, results, token=token, now=now)
    return set(connection.scalars(statement, parameters).all())  # all: one driver call


def record_parameters(
    dialect: str, results: Sequence[RowResult], *, token: int, now: datetime
) -> dict[str, Any]:
    """The record statement's parameters on ``dialect``: the results as JSON, the guard."""
    if dialect == "sqlite":
        rows = [{"id": result.id, **_result_json(result, True)} for result in results]
        return {"results": orjson.dumps(rows).decode(), "now": now, "token": token}
    by_id = {str(result.id): _result_json(result, False) for result in results}
    ids = [result.id for result in results]
    return {"results": orjson.dumps(by_id).decode(), "ids": ids, "now": now, "token": token}


def _result_json(result: RowResult, is_sqlite: bool) -> dict[str, Any]:
    """One result's columns as the record statement reads them from JSON."""
    columns: dict[str, Any] = {
        "status": result.status.value,
        "attempts": result.attempts,
        "next_attempt_at": _timestamp(result.next_attempt_at, is_sqlite),
        "tracking_id": result.tracking_id,
        "last_error": _error_text(result),
    }
    if result.suspicion is not None:  # absent reads as NULL: the row keeps its count
        columns["suspicion"] = result.suspicion
    if result.reach_evidence is not None:  # absent reads as NULL: most rows carry none
        columns["reach_evidence"] = clean(result.reach_evidence)
    return columns


def _error_text(result: RowResult) -> str | None:
    # Whatever an answer held, nothing here can make the statement fail: a tracking id was
    # checked when the answer was read (worker.dispatch.outcomes), an error text is made
    # clean and bounded here.
    return None if result.last_error is None else clean(result.last_error)


def _timestamp(value: datetime | None, is_sqlite: bool) -> str | None:
    """A timestamp as each database compares it: SQLite stores naive UTC text."""
    if value is None:
        return None
    value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(sep=" ") if is_sqlite else value.isoformat()
