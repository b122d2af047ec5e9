"""The claim: take a batch of due rows under a lease, in one statement, and count them due.

Statements take a Connection and an explicit ``now`` so that tests move time instead of
sleeping. Every source is locked ``FOR UPDATE SKIP LOCKED`` (which SQLite, one worker, leaves
out: its writes are serialized by the database lock).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    Integer,
    Select,
    bindparam,
    exists,
    func,
    literal,
    or_,
    select,
    tuple_,
    union_all,
    update,
)

from models import Priority, Status
from models.databases import DATABASES, Database, database_of
from models.outbox import outbox_messages as outbox
from worker.dispatch.floors import FLOORED, LaneFloors
from worker.dispatch.gate.state import GATE_NAME, gate, key_gates


class ClaimedRow(NamedTuple):
    """A row a worker holds under lease, as the database handed it back.

    Text columns are raw: a row inserted by plain SQL may hold anything (on SQLite even bytes
    that are not UTF-8, or a date that is not a date), and the screen decides what is
    sendable. ``attempts`` already counts this claim. A named tuple, not a frozen dataclass:
    built for every claimed row, it costs a fifth as much.
    """

    id: int
    client_message_id: object
    recipient: object
    content: object
    attempts: int
    priority: int
    expires_at: object
    first_due_at: object
    last_error: object  # why the last attempt did not succeed
    suspicion: object = 0  # requests holding it that failed without an answer (screened)
    trace_context: object = None  # the producer's, raw: the batch's span links to it if valid
    segments: object = None  # SMS parts as stored: None for a raw-SQL row or a template
    due_at: object = None  # when it fell due this time (next_attempt_at), raw
    tenant: object = ""  # the sender it goes out for, raw (screened: models/tenant.py)


URGENT = int(Priority.URGENT)  # as a claimed row holds it (int() of the enum, once)


def new_token() -> int:
    """A claim token: 63 random bits, so that no two claims of one row share one."""
    return secrets.randbits(63)


def _lane(priority: Priority, now: Any, *, floored: bool = False) -> Select[Any]:
    query = select(outbox.c.id).where(
        outbox.c.status == Status.PENDING,
        outbox.c.priority == int(priority),
        outbox.c.next_attempt_at <= now,
    )
    if floored and priority in FLOORED:  # past the lane's floor (worker.dispatch.floors)
        at = bindparam(f"floor_at_{int(priority)}", type_=outbox.c.next_attempt_at.type)
        row_id = bindparam(f"floor_id_{int(priority)}", type_=BigInteger())
        query = query.where(tuple_(outbox.c.next_attempt_at, outbox.c.id) > tuple_(at, row_id))
    return query.order_by(outbox.c.next_attempt_at, outbox.c.id)


def _expired_leases(now: Any) -> Select[Any]:
    return (
        select(outbox.c.id)
        .where(outbox.c.status == Status.SENDING, outbox.c.locked_until <= now)
        .order_by(outbox.c.locked_until)
    )


def _sources(now: Any, limit: Any, *, lock: bool, floored: bool = False) -> list[Select[Any]]:
    """Urgent rows first, then rows whose lease ended (a dead worker's), then normal and bulk
    (each past its floor, when ``floored``)."""
    sources = [
        _lane(Priority.URGENT, now),
        _expired_leases(now),
        _lane(Priority.NORMAL, now, floored=floored),
        _lane(Priority.BULK, now, floored=floored),
    ]
    limited = [source.limit(limit) for source in sources]
    if lock:
        limited = [source.with_for_update(skip_locked=True) for source in limited]
    return limited


def _head_tenant(now: Any) -> Any:
    """The tenant of the row the claim would take first (urgent, a lapsed lease, normal,
    bulk; each lane past its floor): the batch is that tenant's alone, sent under its key.
    Read with SKIP LOCKED, so a row another claim holds names no tenant."""
    heads = [
        source.with_only_columns(outbox.c.tenant).cte(f"head_{n}")
        for n, source in enumerate(_sources(now, 1, lock=True, floored=True))
    ]
    return union_all(*(select(head.c.tenant) for head in heads)).limit(1).scalar_subquery()


def _claim_statement(database: Database) -> Any:
    """Take up to ``limit`` due rows in one statement: mark them sending under a lease and a
    fresh claim token, count the attempt and remember when each first fell due.

    A batch holds one tenant's rows: the tenant of the row that would come first. Urgent
    rows come first, then expired leases, then normal and bulk rows, each lane oldest
    due first; every source is read through a partial index (each lane is one range of
    ix_outbox_messages_due) and locked with SKIP LOCKED, and read only as far as the batch
    still needs rows. Urgent rows go without normal and bulk rows: when any is due those lanes
    are skipped by a one-time filter, so a code's request and record take a few rows' time,
    not a full bulk batch's. Expired leases still come with them: a dead worker's rows (its
    urgent ones among them) would otherwise wait for a claim that finds no urgent row, for
    ever under a steady urgent flow. With ``urgent_alone`` false (a request rate in force)
    urgent rows fill their batch from every lane. Guarded by the gate's version and, for a key
    that is not WIRAYA_API_KEY (``account``), by its own row's: when any brake changed since the
    worker read the gate, nothing is claimed (a one-time filter skips the sources altogether).
    """
    limit = bindparam("limit", type_=Integer())
    now = bindparam("now", type_=outbox.c.updated_at.type)
    # The first pass names no tenant (the head row's is taken); a second one, past no floor,
    # keeps the first's tenant.
    tenant = func.coalesce(bindparam("batch_tenant", type_=outbox.c.tenant.type), _head_tenant(now))
    sources = [
        source.where(outbox.c.tenant == tenant).cte(f"source_{n}")
        for n, source in enumerate(_sources(now, limit, lock=True, floored=True))
    ]
    account_version = (
        select(key_gates.c.version)
        .where(key_gates.c.fingerprint == bindparam("account", type_=key_gates.c.fingerprint.type))
        .scalar_subquery()
    )
    unchanged = exists().where(
        gate.c.name == GATE_NAME,
        gate.c.version == bindparam("version", type_=BigInteger()),
        func.coalesce(account_version, 0) == bindparam("account_version", type_=BigInteger()),
    )
    urgent, lapsed, *others = sources
    # While a request rate is in force, requests are what is scarce: urgent rows then fill
    # their batch with the other lanes instead of spending a request on a few rows.
    filling = ~bindparam("urgent_alone", type_=Boolean())
    no_urgent = or_(filling, ~exists(select(urgent.c.id)))
    lanes = [
        select(urgent.c.id),
        select(lapsed.c.id),
        *(select(source.c.id).where(no_urgent) for source in others),
    ]
    chosen = union_all(*lanes).limit(limit).subquery("chosen")
    guarded = select(chosen.c.id).where(unchanged)
    return (
        update(outbox)
        .where(outbox.c.id.in_(guarded))
        .values(
            status=Status.SENDING,
            locked_until=bindparam("locked_until", type_=outbox.c.locked_until.type),
            claim_token=bindparam("token", type_=BigInteger()),
            attempts=outbox.c.attempts + 1,
            first_due_at=func.coalesce(outbox.c.first_due_at, outbox.c.next_attempt_at),
            updated_at=now,
        )
        .returning(*_returned(database))
    )


def _returned(database: Database) -> list[Any]:
    """The claimed columns, text and times raw as the database hands them (screened later)."""
    raw = [
        database.raw_text(outbox.c[name]).label(name)
        for name in ("client_message_id", "recipient", "content")
    ]
    times = [
        database.raw_time(outbox.c[name]).label(name) for name in ("expires_at", "first_due_at")
    ]
    trace = database.raw_text(outbox.c.trace_context).label("trace_context")
    return [
        outbox.c.id,
        *raw,
        outbox.c.attempts,
        outbox.c.priority,
        *times,
        database.raw_text(outbox.c.last_error).label("error"),
        outbox.c.suspicion,
        trace,
        outbox.c.segments,
        database.raw_time(outbox.c.next_attempt_at).label("due_at"),
        database.raw_text(outbox.c.tenant).label("tenant"),
    ]


# Built once per database: the claim runs for every batch, and building it costs more than
# running it.
CLAIMS = {database: _claim_statement(database) for database in DATABASES}


def claim(
    connection: Connection,
    *,
    limit: int,
    lease: timedelta,
    now: datetime,
    version: int,
    token: int,
    urgent_alone: bool = True,
    floors: LaneFloors | None = None,
    tenant: str | None = None,
    account: str | None = None,
    account_version: int = 0,
) -> list[ClaimedRow]:
    """Claim up to ``limit`` due rows under ``token``; none when the gate left ``version`` (or
    the row of ``account``, a key that is not WIRAYA_API_KEY, left ``account_version``).

    Urgent rows go in a batch of their own unless ``urgent_alone`` is false. With ``floors``
    (a process's own), the normal and bulk lanes are read past the rows its last claims took;
    a claim that comes back short there takes the rest from the head of each lane, and a claim
    short after that leaves no floors (the lanes hold no more due rows), unless ``tenant``
    chose whose rows it took. With
    ``tenant``, that tenant's rows only (else the tenant of the row that would come first).
    """
    floors = floors if floors is not None else LaneFloors()
    parameters = {
        "urgent_alone": urgent_alone,
        "limit": limit,
        "now": now,
        "locked_until": now + lease,
        "version": version,
        "token": token,
        "batch_tenant": tenant,
        "account": account,
        "account_version": account_version,
    }
    bounded = floors.in_force()
    rows = _claimed(connection, {**parameters, **floors.parameters()})
    urgent = any(row.priority == URGENT for row in rows)
    if bounded and len(rows) < limit and not urgent:  # below a floor may lie a row due
        floors.clear()
        rest = {
            **parameters,
            "limit": limit - len(rows),
            **floors.parameters(),
            "batch_tenant": tenant_of(rows) if rows else tenant,
        }
        rows += _claimed(connection, rest)
    if len(rows) < limit and not urgent and tenant is None:
        # Every due row taken (of the tenant that came first: one tenant's short claim says
        # nothing of another's that ``tenant`` chose): nothing lies above a floor, and the
        # next claim reads once, from the heads.
        floors.clear()
    else:
        floors.advance([(row.priority, row.id, row.due_at) for row in rows])
    rows.sort(key=lambda row: row.id)
    return rows


def tenant_of(rows: list[ClaimedRow]) -> str | None:
    """The tenant the first pass took, as text (SQLite hands raw text back as bytes)."""
    if not rows:
        return None
    raw = rows[0].tenant
    if isinstance(raw, bytes | bytearray | memoryview):
        raw = bytes(raw).decode("utf-8", "replace")
    return raw if isinstance(raw, str) else None


def _claimed(connection: Connection, parameters: dict[str, Any]) -> list[ClaimedRow]:
    statement = CLAIMS[database_of(connection)]
    # fetchall: iterating a result fetches one row per driver call; _make: no call of
    # ClaimedRow's Python __new__ per row (it returns every field)
    return list(map(ClaimedRow._make, connection.execute(statement, parameters).fetchall()))


def _count_due_statement() -> Any:
    """How many rows are due now, counting no further than ``cap``: the claim's own sources,
    unlocked, each stopped at the cap (cheap on any backlog, scheduled rows unread)."""
    limit = bindparam("cap", type_=Integer())
    now = bindparam("now", type_=outbox.c.updated_at.type)
    due = union_all(
        *(
            select(literal(1).label("one")).select_from(source.subquery())
            for source in _sources(now, limit, lock=False)
        )
    )
    return select(func.count()).select_from(due.limit(limit).subquery())


COUNT_DUE = _count_due_statement()


def count_due(connection: Connection, *, now: datetime, cap: int) -> int:
    return int(connection.scalar(COUNT_DUE, {"now": now, "cap": cap}) or 0)


# -- urgent_due -- Whether an urgent row is due now (the claim's urgent source, unlocked, one
# row read): a batch halving its way down to the API's limit gives way to it.
URGENT_DUE = select(exists(_lane(Priority.URGENT, bindparam("now")).limit(1).subquery()))


def urgent_due(connection: Connection, *, now: datetime) -> bool:
    return bool(connection.scalar(URGENT_DUE, {"now": now}))


def urgent_due_now(
    connect: Callable[[], AbstractContextManager[Connection]], clock: Callable[[], datetime]
) -> bool:
    """`urgent_due` on a connection of its own, at the clock's time."""
    with connect() as connection:
        return urgent_due(connection, now=clock())
