"""The gate's tables, and the gate as one worker reads it (one round trip per batch)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Float,
    Integer,
    Table,
    Text,
    and_,
    bindparam,
    func,
    or_,
    select,
    text,
)

from models.databases import database_of
from models.outbox import Base
from models.types import UtcDateTime

GATE_NAME = "wiraya"

dispatch_gate = Table(
    "outbox_dispatch_gate",
    Base.metadata,
    Column("name", Text, primary_key=True),
    # Bumped by every change of a brake; a claim is guarded by the version its worker read.
    Column("version", BigInteger, nullable=False, server_default=text("0")),
    # No request starts before this time (Retry-After floor, backoff after a failure) under
    # WIRAYA_API_KEY; under the other keys, before api_paused_until and their own pause.
    Column("paused_until", UtcDateTime),
    # Why sending is held back, for the CLI, metrics and logs.
    Column("reason", Text),
    # Counted request-level failures in a row; at OUTBOX_CIRCUIT_FAILURES the circuit is open.
    Column("failures", Integer, nullable=False, server_default=text("0")),
    # The open circuit's probe: in flight until probe_until; the next one not before.
    Column("probe_until", UtcDateTime),
    Column("next_probe_at", UtcDateTime),
    # When an answer and a failure were last noted: evidence of whether the API answers.
    Column("last_success_at", UtcDateTime),
    Column("last_failure_at", UtcDateTime),
    # The learnt request rate (requests/s; null: none), the rate of the last 429, and the
    # cursor of request slots shared by every worker while a rate is in force.
    Column("rate", Float),
    Column("rate_ceiling", Float),
    Column("next_send_at", UtcDateTime),
    # The largest batch allowed after a too-many-items answer, and the largest one answered.
    Column("batch_limit", Integer),
    Column("batch_proven", Integer),
    Column("updated_at", UtcDateTime),
    # The pause every key observes: the backoff after a request-level failure (the API's health),
    # apart from WIRAYA_API_KEY's 429 pause, which paused_until holds as well.
    Column("api_paused_until", UtcDateTime),
)

key_gates = Table(
    "outbox_key_gates",
    Base.metadata,
    # The fingerprint of a key other than WIRAYA_API_KEY (whose brakes are the gate row's): its
    # account's own 429 pause, learnt rate and request slots (Wiraya's rate limit is per account).
    Column("fingerprint", Text, primary_key=True),
    # Bumped by the key's 429; a claim of its tenants' rows is guarded by the version read.
    Column("version", BigInteger, nullable=False, server_default=text("0")),
    Column("paused_until", UtcDateTime),
    Column("reason", Text),
    Column("rate", Float),
    Column("rate_ceiling", Float),
    Column("next_send_at", UtcDateTime),
    Column("updated_at", UtcDateTime),
    # The tenants the key serves, comma-separated and sorted, as the workers' WIRAYA_API_KEYS
    # give them ("": none now): the operator commands name the key by them, holding no key.
    Column("tenants", Text, nullable=False, server_default=text("''")),
)

refused_keys = Table(
    "outbox_refused_keys",
    Base.metadata,
    # SHA-256 prefix of an API key the API refused (401/403); the key itself is never stored.
    Column("fingerprint", Text, primary_key=True),
    Column("status", Integer, nullable=False),
    Column("reason", Text),
    Column("refused_at", UtcDateTime, nullable=False),
    # That key's probe: one message on the probe cadence, to notice when it works again.
    Column("probe_until", UtcDateTime),
    Column("next_probe_at", UtcDateTime),
    # Set when a request with the key was answered again (or an operator resumed): not refused.
    Column("cleared_at", UtcDateTime),
)

gate = dispatch_gate
keys = refused_keys


@dataclass(frozen=True)
class GateView:
    """The gate as one worker read it, with its own key's refusal."""

    version: int
    paused_until: datetime | None
    reason: str | None
    failures: int
    probe_until: datetime | None
    next_probe_at: datetime | None
    last_success_at: datetime | None
    last_failure_at: datetime | None
    rate: float | None
    rate_ceiling: float | None
    next_send_at: datetime | None
    batch_limit: int | None
    batch_proven: int | None
    key_refused: bool = False
    key_reason: str | None = None
    key_probe_until: datetime | None = None
    key_next_probe_at: datetime | None = None
    key_refused_at: datetime | None = None
    refused_key_count: int = 0  # keys refused since the API last answered any key
    forbidden_key_count: int = 0  # of those, refused with a 403 (Wiraya's side, not the key)
    key: str = ""  # the fingerprint of the key this view was read for (its refusal above)
    # True when the key is not WIRAYA_API_KEY: the pause, reason, rate and slot cursor above are
    # then its own row's (outbox_key_gates), its pause joined with the one every key observes.
    own_account: bool = False
    key_version: int = 0  # its row's version (0: WIRAYA_API_KEY's, the gate row's alone)
    api_paused_until: datetime | None = None  # the pause every key observes (failures)

    def unchanged_since(self, read: GateView) -> bool:
        """Whether no brake of the gate nor of this view's key changed since ``read``."""
        return (self.version, self.key_version) == (read.version, read.key_version)

    def paused(self, now: datetime) -> bool:
        """True while a pause is in force for every worker sending under the view's key."""
        return self.paused_until is not None and self.paused_until > now

    def circuit_open(self, threshold: int) -> bool:
        """True from ``threshold`` counted failures in a row until a success."""
        return self.failures >= threshold

    def key_answered_since_refusal(self) -> bool:
        """True when the API answered a request (under any key) after it refused this one:
        the key was replaced, or works again; the refusal no longer holds the outbox back."""
        return (
            self.key_refused_at is not None
            and self.last_success_at is not None
            and self.last_success_at > self.key_refused_at
        )

    def answered_since_failure(self) -> bool:
        """True when the last thing noted of the API was an answer, not a failure."""
        if self.last_success_at is None:
            return False
        return self.last_failure_at is None or self.last_success_at > self.last_failure_at


def read(connection: Connection, fingerprint: str, *, own_account: bool = False) -> GateView:
    """The gate and one key's refusal in one round trip; creates the row the first time. With
    ``own_account`` (a key that is not WIRAYA_API_KEY), the key's own pause, rate and slots."""
    parameters = {"fingerprint": fingerprint, "account": fingerprint if own_account else None}
    row = connection.execute(_READ, parameters).one_or_none()
    if row is None or (own_account and row.account_version is None):
        create(connection, fingerprint if own_account else None)
        row = connection.execute(_READ, parameters).one()
    return _view(row, fingerprint, own_account=own_account)


ACCOUNT_COLUMNS = ("version", "paused_until", "reason", "rate", "rate_ceiling", "next_send_at")


def _read_statement() -> Any:
    mine = keys.alias("mine")
    account = key_gates.alias("account")
    # The alarm: keys refused since the API last answered. A key another one replaced stays
    # refused for the workers still holding it, but an answer under the new key ends the alarm.
    alarmed = and_(
        keys.c.cleared_at.is_(None),
        or_(gate.c.last_success_at.is_(None), keys.c.refused_at > gate.c.last_success_at),
    )
    refused = select(func.count()).select_from(keys).where(alarmed).scalar_subquery()
    forbidden = (
        select(func.count()).select_from(keys).where(alarmed, keys.c.status == 403)
    ).scalar_subquery()
    join = gate.outerjoin(
        mine,
        and_(
            mine.c.fingerprint == bindparam("fingerprint", type_=Text()),
            mine.c.cleared_at.is_(None),
        ),
    ).outerjoin(account, account.c.fingerprint == bindparam("account", type_=Text()))
    return (
        select(
            *gate.c,
            mine.c.fingerprint.label("key_fingerprint"),
            mine.c.reason.label("key_reason"),
            mine.c.probe_until.label("key_probe_until"),
            mine.c.next_probe_at.label("key_next_probe_at"),
            mine.c.refused_at.label("key_refused_at"),
            refused.label("refused_key_count"),
            forbidden.label("forbidden_key_count"),
            *(account.c[name].label(f"account_{name}") for name in ACCOUNT_COLUMNS),
        )
        .select_from(join)
        .where(gate.c.name == GATE_NAME)
    )


_READ = _read_statement()


def _view(row: Any, fingerprint: str, *, own_account: bool) -> GateView:
    view = GateView(
        version=row.version,
        paused_until=row.paused_until,
        reason=row.reason,
        failures=row.failures,
        probe_until=row.probe_until,
        next_probe_at=row.next_probe_at,
        last_success_at=row.last_success_at,
        last_failure_at=row.last_failure_at,
        rate=row.rate,
        rate_ceiling=row.rate_ceiling,
        next_send_at=row.next_send_at,
        batch_limit=row.batch_limit,
        batch_proven=row.batch_proven,
        key_refused=row.key_fingerprint is not None,
        key_reason=row.key_reason,
        key_probe_until=row.key_probe_until,
        key_next_probe_at=row.key_next_probe_at,
        key_refused_at=row.key_refused_at,
        refused_key_count=int(row.refused_key_count or 0),
        forbidden_key_count=int(row.forbidden_key_count or 0),
        key=fingerprint,
        api_paused_until=row.api_paused_until,
    )
    if not own_account:
        return view
    own = {name: getattr(row, f"account_{name}") for name in ACCOUNT_COLUMNS}
    return _under_own_account(view, fingerprint, own)


def _under_own_account(view: GateView, fingerprint: str, own: dict[str, Any]) -> GateView:
    """The gate's view for a key that is not WIRAYA_API_KEY: its own row's pause (joined with
    the one every key observes), rate and slot cursor instead of the gate row's."""
    shared, mine = view.api_paused_until, own["paused_until"]
    own_later = mine is not None and (shared is None or mine > shared)
    # The key's 429 is why it waits while its pause ends later, unless the API is failing.
    reason = own["reason"] if own_later and not view.failures else view.reason
    return replace(
        view,
        key=fingerprint,
        own_account=True,
        key_version=int(own["version"] or 0),
        paused_until=mine if own_later else shared,
        reason=reason,
        rate=own["rate"],
        rate_ceiling=own["rate_ceiling"],
        next_send_at=own["next_send_at"],
    )


def create(connection: Connection, account: str | None = None) -> None:
    """The gate row and, for a key that is not WIRAYA_API_KEY, its own row."""
    insert = database_of(connection).insert
    connection.execute(insert(gate).values(name=GATE_NAME).on_conflict_do_nothing())
    if account is not None:
        connection.execute(insert(key_gates).values(fingerprint=account).on_conflict_do_nothing())


def account_views(connection: Connection) -> list[GateView]:
    """The gate as read for WIRAYA_API_KEY (its key blank) and for every key with a row of its
    own (their pause, rate and slots), in two statements whatever the number of keys."""
    shared = read(connection, "")
    rows = connection.execute(select(key_gates)).mappings()
    return [shared, *(_under_own_account(shared, row["fingerprint"], dict(row)) for row in rows)]


def key_still_refused(connection: Connection, fingerprint: str) -> bool:
    """Whether the key is refused now: a view read earlier may predate its clearing."""
    statement = select(keys.c.fingerprint).where(
        keys.c.fingerprint == fingerprint, keys.c.cleared_at.is_(None)
    )
    return connection.execute(statement).first() is not None


def held_keys(connection: Connection, now: datetime) -> set[str]:
    """The refused keys that may send nothing now: not cleared, and their retry not yet due
    (or in flight). A refused key whose retry is due is not held: its retry is its permit's."""
    statement = select(keys.c.fingerprint).where(
        keys.c.cleared_at.is_(None),
        or_(
            and_(keys.c.next_probe_at.is_not(None), keys.c.next_probe_at > now),
            and_(keys.c.probe_until.is_not(None), keys.c.probe_until > now),
        ),
    )
    return {str(fingerprint) for fingerprint in connection.scalars(statement)}
