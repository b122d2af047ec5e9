"""The gate's transitions: each one statement, named for the guard that refuses a stale write.

The learnt batch size's are in `worker.dispatch.gate.batch_transitions`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    case,
    func,
    or_,
    select,
    update,
)

from models.databases import database_of
from worker.dispatch.gate.state import GATE_NAME, create, gate, key_gates, keys


def _later(connection: Connection) -> Callable[..., Any]:
    return database_of(connection).greatest


def _sooner(connection: Connection) -> Callable[..., Any]:
    return database_of(connection).least


def _execute(connection: Connection, statement: Any) -> bool:
    """Run one guarded transition; True when its guard held (the row was written)."""
    return bool(connection.execute(statement).rowcount == 1)


def _this_gate() -> ColumnElement[bool]:
    return gate.c.name == GATE_NAME


def account_row(account: str | None) -> tuple[Table, ColumnElement[bool]]:
    """Where a key's rate and slots live: its own row, or (None: WIRAYA_API_KEY) the gate row."""
    if account is None:
        return gate, _this_gate()
    return key_gates, key_gates.c.fingerprint == account


def note_answered(connection: Connection, *, now: datetime) -> None:
    """Evidence that the API answers: the time of the latest answer, moved forward only (concurrent
    notes commute). Written at most about once a second per worker."""
    later = _later(connection)
    value = later(func.coalesce(gate.c.last_success_at, now), now)
    connection.execute(update(gate).where(_this_gate()).values(last_success_at=value))


def close_circuit_unless_failed_since(
    connection: Connection, *, started: datetime, now: datetime, lift_pause: bool = True
) -> bool:
    """A request that started at ``started`` was answered: close the circuit, end a pause and a
    probe, forget the reason, unless a failure (a 5xx, a 429, a timeout) was noted after it
    started: that newer news wins. Without ``lift_pause`` (an answer under a key that is not
    WIRAYA_API_KEY) only the pause every key observes ends: WIRAYA_API_KEY's 429 pause is not
    that answer's to end."""
    brakes = [
        gate.c.failures > 0,
        gate.c.api_paused_until.is_not(None),
        gate.c.probe_until.is_not(None),
    ]
    values: dict[str, Any] = {
        "failures": 0,
        "api_paused_until": None,
        "probe_until": None,
        "next_probe_at": None,
        "version": gate.c.version + 1,
        "updated_at": now,
    }
    if lift_pause:
        brakes += [gate.c.paused_until.is_not(None), gate.c.reason.is_not(None)]
        values.update(paused_until=None, reason=None)
    statement = (
        update(gate)
        .where(
            _this_gate(),
            or_(gate.c.last_failure_at.is_(None), gate.c.last_failure_at < started),
            or_(*brakes),
        )
        .values(values)
    )
    return _execute(connection, statement)


def count_failure_unless_answered_since(
    connection: Connection,
    *,
    started: datetime,
    now: datetime,
    reason: str,
    pause_until: datetime,
    threshold: int,
    probe_at: datetime,
    probe_until: datetime | None = None,
) -> bool:
    """A request-level failure of a request that started at ``started``: count it, pause every
    worker until ``pause_until`` (never shortening a pause) and, at the threshold, open the circuit
    with its first probe after ``probe_at``; a probe's own failure also ends its lease (the one
    ending at ``probe_until``: not one another worker took since it lapsed). Refused
    when a request was answered after ``started``: the API answers others, so the failure belongs
    to a message of that request."""
    later = _later(connection)
    opens = gate.c.failures + 1 >= threshold
    values: dict[str, Any] = {
        "failures": gate.c.failures + 1,
        "last_failure_at": now,
        "reason": reason,
        "paused_until": later(func.coalesce(gate.c.paused_until, pause_until), pause_until),
        "api_paused_until": later(func.coalesce(gate.c.api_paused_until, pause_until), pause_until),
        "next_probe_at": case(
            (opens, later(func.coalesce(gate.c.next_probe_at, probe_at), probe_at)),
            else_=gate.c.next_probe_at,
        ),
        "version": gate.c.version + 1,
        "updated_at": now,
    }
    if probe_until is not None:  # this worker's probe ends, not one another took since
        values["probe_until"] = case(
            (gate.c.probe_until == probe_until, None), else_=gate.c.probe_until
        )
    statement = (
        update(gate)
        .where(
            _this_gate(),
            or_(gate.c.last_success_at.is_(None), gate.c.last_success_at <= started),
        )
        .values(values)
    )
    return _execute(connection, statement)


def note_rate_limited(
    connection: Connection, *, now: datetime, reason: str, pause_until: datetime
) -> None:
    """A 429 under WIRAYA_API_KEY: its workers pause at least until ``pause_until`` (Retry-After is
    the floor, a pause is never shortened) and note it as a failure for the evidence above; the
    circuit does not count it (the API is up; we are too fast). The other keys observe only
    ``api_paused_until``: this pause is not theirs."""
    later = _later(connection)
    statement = (
        update(gate)
        .where(_this_gate())
        .values(
            paused_until=later(func.coalesce(gate.c.paused_until, pause_until), pause_until),
            last_failure_at=now,
            reason=reason,
            version=gate.c.version + 1,
            updated_at=now,
        )
    )
    connection.execute(statement)


def book_slot_if_unchanged(
    connection: Connection,
    *,
    read_next_send_at: datetime | None,
    read_rate: float | None,
    booked_next: datetime,
    account: str | None = None,
) -> bool:
    """Take the next request slot of the key's own row (``account``) or WIRAYA_API_KEY's, the
    gate row: from the cursor this worker read to ``booked_next`` (its slot plus the spacing of the
    learnt rate it read). Refused when another worker moved the cursor or the key's rate changed
    since (a 429 meanwhile: the spacing is the lowered rate's)."""
    table, this = account_row(account)
    statement = (
        update(table)
        .where(
            this,
            unchanged(table.c.next_send_at, read_next_send_at),
            unchanged(table.c.rate, read_rate),
        )
        .values(next_send_at=booked_next)
    )
    return _execute(connection, statement)


def read_slot_cursor(
    connection: Connection, account: str | None = None
) -> tuple[datetime | None, float | None]:
    """Where the key's slot cursor stands now, and its learnt rate (after a refused write)."""
    table, this = account_row(account)
    row = connection.execute(select(table.c.next_send_at, table.c.rate).where(this)).one()
    return row.next_send_at, row.rate


def unchanged(column: ColumnElement[Any], read: object) -> ColumnElement[bool]:
    """The column still holds the value a worker read (NULL included)."""
    return column.is_(None) if read is None else column == read


def take_probe_if_free(
    connection: Connection, *, now: datetime, until: datetime, threshold: int, own_key: bool = False
) -> bool:
    """While the circuit is open, one worker at a time sends one message: the first to set the
    probe's lease wins, once the cadence allows and no pause is in force (for a key that is not
    WIRAYA_API_KEY, ``own_key``: no pause every key observes; its own is its claim's guard)."""
    pause = gate.c.api_paused_until if own_key else gate.c.paused_until
    statement = (
        update(gate)
        .where(
            _this_gate(),
            gate.c.failures >= threshold,
            or_(pause.is_(None), pause <= now),
            or_(gate.c.next_probe_at.is_(None), gate.c.next_probe_at <= now),
            or_(gate.c.probe_until.is_(None), gate.c.probe_until <= now),
        )
        .values(probe_until=until, updated_at=now)
    )
    return _execute(connection, statement)


def release_probe_if_mine(
    connection: Connection, *, until: datetime, next_probe: datetime | None = None
) -> None:
    """End this worker's probe: at once when it sent nothing, or with the next probe not
    before ``next_probe`` when its request drew no answer that said anything of the API."""
    values: dict[str, Any] = {"probe_until": None}
    if next_probe is not None:
        later = _later(connection)
        values["next_probe_at"] = later(func.coalesce(gate.c.next_probe_at, next_probe), next_probe)
    statement = update(gate).where(_this_gate(), gate.c.probe_until == until).values(values)
    connection.execute(statement)


def refuse_key_unless_cleared_since(
    connection: Connection,
    *,
    fingerprint: str,
    status: int,
    reason: str,
    started: datetime,
    now: datetime,
    probe_at: datetime,
) -> bool:
    """The API refused this key (401/403): it sends no more but one probe per ``probe_at``. Refused
    when the key was cleared after the request started (an answer with that key, or an operator's
    resume, is newer news)."""
    insert = database_of(connection).insert
    values = {
        "fingerprint": fingerprint,
        "status": status,
        "reason": reason,
        "refused_at": now,
        "next_probe_at": probe_at,
        "probe_until": None,
        "cleared_at": None,
    }
    statement = insert(keys).values(values)
    statement = statement.on_conflict_do_update(
        index_elements=[keys.c.fingerprint],
        set_={name: statement.excluded[name] for name in values if name != "fingerprint"},
        where=or_(keys.c.cleared_at.is_(None), keys.c.cleared_at < started),
    )
    # RETURNING tells an insert or an update from a refused one on every driver (an INSERT's
    # rowcount is not reliable through psycopg).
    return connection.execute(statement.returning(keys.c.fingerprint)).first() is not None


def take_key_probe_if_free(
    connection: Connection, *, fingerprint: str, now: datetime, until: datetime
) -> bool:
    """A refused key's one message per cadence, one worker at a time."""
    statement = (
        update(keys)
        .where(
            keys.c.fingerprint == fingerprint,
            keys.c.cleared_at.is_(None),
            or_(keys.c.next_probe_at.is_(None), keys.c.next_probe_at <= now),
            or_(keys.c.probe_until.is_(None), keys.c.probe_until <= now),
        )
        .values(probe_until=until)
    )
    return _execute(connection, statement)


def release_key_probe_if_mine(
    connection: Connection, *, fingerprint: str, until: datetime, next_probe: datetime | None
) -> None:
    """End this worker's key probe: at once when it sent nothing, or with the key's next probe at
    ``next_probe`` when its answer said nothing of the key."""
    values: dict[str, Any] = {"probe_until": None}
    if next_probe is not None:
        values["next_probe_at"] = next_probe
    statement = (
        update(keys)
        .where(keys.c.fingerprint == fingerprint, keys.c.probe_until == until)
        .values(values)
    )
    connection.execute(statement)


def clear_key_unless_refused_since(
    connection: Connection, *, fingerprint: str, started: datetime, now: datetime
) -> bool:
    """A request with this key was answered: the key works again, unless it was refused after that
    request started."""
    statement = (
        update(keys)
        .where(
            keys.c.fingerprint == fingerprint,
            keys.c.cleared_at.is_(None),
            keys.c.refused_at < started,
        )
        .values(cleared_at=now, probe_until=None)
    )
    return _execute(connection, statement)


def reset(connection: Connection, *, now: datetime) -> None:
    """An operator's resume: clear every brake and every refused key at once; requests already in
    flight cannot undo it (their failures started before it, their keys' too). Each key's next
    request slot stays: a request booked just before is still followed a configured rate's
    spacing later; after a learnt rate's last slot the wait is at most 1 / MIN_RATE (20 s)."""
    create(connection)
    statement = (
        update(gate)
        .where(_this_gate())
        .values(
            paused_until=None,
            api_paused_until=None,
            reason=None,
            failures=0,
            probe_until=None,
            next_probe_at=None,
            last_success_at=now,
            rate=None,
            rate_ceiling=None,
            batch_limit=None,
            batch_proven=None,
            version=gate.c.version + 1,
            updated_at=now,
        )
    )
    connection.execute(statement)
    cleared = update(keys).where(keys.c.cleared_at.is_(None)).values(cleared_at=now)
    connection.execute(cleared)
    accounts = update(key_gates).values(
        paused_until=None,
        reason=None,
        rate=None,
        rate_ceiling=None,
        version=key_gates.c.version + 1,
        updated_at=now,
    )
    connection.execute(accounts)
