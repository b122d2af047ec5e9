"""The record: every claimed row's outcome in one statement, guarded against stale workers."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection

from models import Status
from models.databases import Database, database_of
from models.text import clean

_TRACKING_ID = re.compile(r"[0-9a-fA-F]{32}")


def is_tracking_id(value: object) -> bool:
    """True for what the API documents as a tracking id: 32 hexadecimal characters."""
    return isinstance(value, str) and _TRACKING_ID.fullmatch(value) is not None


class RowResult(NamedTuple):
    """What one claimed row becomes; written for the whole batch by ``record``. A named tuple,
    built for every claimed row: a frozen dataclass costs several times as much to build."""

    id: int
    status: Status
    attempts: int
    next_attempt_at: datetime | None = None
    tracking_id: str | None = None
    last_error: str | None = None
    reach_evidence: str | None = None  # why it may have reached Wiraya; kept once written
    suspicion: int | None = None  # None: unchanged (a row released unsent keeps its count)


def record(
    connection: Connection, results: Sequence[RowResult], *, token: int, now: datetime
) -> set[int]:
    """Write ``results`` for the rows claimed under ``token`` in one statement, guarded against
    a worker whose lease ended (see ``Database.record_statement``); returns the ids written."""
    if not results:
        return set()
    database = database_of(connection)
    parameters = record_parameters(database, results, token=token, now=now)
    # all: one driver call
    return set(connection.scalars(database.record_statement(), parameters).all())


def record_parameters(
    database: Database, results: Sequence[RowResult], *, token: int, now: datetime
) -> dict[str, Any]:
    """The record statement's parameters on ``database``: the results as JSON, the guard."""
    rows = [_result_columns(result) for result in results]
    return database.record_parameters(rows, token=token, now=now)


def _result_columns(result: RowResult) -> dict[str, Any]:
    """One result's id and columns as the record statement reads them from JSON."""
    columns: dict[str, Any] = {
        "id": result.id,
        "status": result.status,  # a StrEnum: JSON writes its value
        "attempts": result.attempts,
        "next_attempt_at": result.next_attempt_at,
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
