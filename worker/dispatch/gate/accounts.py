"""Each key's own account: Wiraya limits each account (API key) on its own.

A key's 429 pause, its learnt request rate and its slot cursor are its own: WIRAYA_API_KEY's in
the gate row (as in an outbox without tenants), every other key's in its row of
outbox_key_gates, created the first time a worker reads the gate for it. Its configured rate is
OUTBOX_RATE_LIMIT for WIRAYA_API_KEY and OUTBOX_RATE_LIMITS for a tenant's own key. The circuit,
the pause after a counted failure and the batch limit are every key's (the API's health).

The transitions here are one statement each, as the gate's others (worker.dispatch.gate.
transitions): a 429 lowers a key's rate only ever down, moving its slot cursor on by the wider
spacing from the rate and cursor read, and lengthens its pause only ever; an answer raises the
rate only from the value read.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, func, or_, update

from models.databases import database_of
from worker.api_keys import key_fingerprint
from worker.dispatch.gate import transitions as t
from worker.dispatch.gate.pacing import Pacing
from worker.dispatch.gate.state import GateView, account_views, key_gates
from worker.dispatch.gate.transitions import account_row
from worker.dispatch.retry import rate_after_429, rate_after_answer
from worker.settings import Settings

# A 429's lowering is refused by each booking made meanwhile under the key; past this many, the
# rate comes down without moving the cursor (a booking burst lasts at most MAX_SLOT_WAIT).
LOWER_RETRIES = 20


def account_of(view: GateView) -> str | None:
    """The key whose own row the view's rate and pause are (None: WIRAYA_API_KEY's, the gate's)."""
    return view.key if view.own_account else None


def pacing_of(settings: Settings, default_key: str) -> Pacing:
    """The configured rates by key: OUTBOX_RATE_LIMIT for WIRAYA_API_KEY (``default_key``),
    OUTBOX_RATE_LIMITS for tenants' own keys (tenants sharing a key, an account, share the
    lowest)."""
    configured = settings.configured_rate
    per_key: dict[str, float] = {}
    for tenant, rate in settings.rate_limits.items():
        key = settings.tenant_api_key(tenant) or settings.api_key
        fingerprint = key_fingerprint(key, settings.fingerprint_salt)
        if fingerprint == default_key:
            configured = min(rate, configured or rate)
        else:
            per_key[fingerprint] = min(rate, per_key.get(fingerprint, rate))
    return Pacing(configured, per_key)


def held_accounts(
    connection: Connection, pacing: Pacing, default_key: str, now: datetime
) -> set[str]:
    """The keys their own brakes hold now: their 429 pause, or their next request slot too far
    to wait for; the pause every key observes (the API's failures) holds none apart."""
    held = set()
    for view in account_views(connection):
        shared, until = view.api_paused_until, view.paused_until
        own_pause = until is not None and until > now and (shared is None or shared < until)
        if own_pause or not pacing.slot_reachable(view, now):
            held.add(view.key if view.own_account else default_key)
    return held


def rate_limited(
    connection: Connection,
    view: GateView,
    pacing: Pacing,
    *,
    until: datetime,
    reason: str,
    now: datetime,
) -> None:
    """A 429 under the view's key: that key's workers pause until ``until`` at least, and its
    rate comes down from the one in force: the configured rate when answers grew the learnt one
    past it (coming down from the learnt one would leave the configured one)."""
    account = account_of(view)
    if account is None:
        t.note_rate_limited(connection, now=now, reason=reason, pause_until=until)
    else:
        note_key_rate_limited(
            connection, account=account, now=now, reason=reason, pause_until=until
        )
    rate, ceiling = rate_after_429(pacing.rate(view))
    lower_rate_and_cursor(connection, view, pacing, rate=rate, ceiling=ceiling, now=now)


def lower_rate_and_cursor(
    connection: Connection,
    view: GateView,
    pacing: Pacing,
    *,
    rate: float,
    ceiling: float | None,
    now: datetime,
) -> None:
    """A 429 under the view's key: that key's learnt rate comes down to ``rate``, only ever down,
    and its cursor moves on by the wider spacing, so the slot booked last (perhaps still waited
    for) is followed at the lowered rate, not at the rate it was booked at. Read again while
    bookings refuse it; past LOWER_RETRIES the rate comes down anyway, the cursor left."""
    account = account_of(view)
    for _ in range(LOWER_RETRIES):
        cursor, learnt = t.read_slot_cursor(connection, account)
        if learnt is not None and learnt <= rate:
            return  # another 429 brought it as low already
        if lower_rate_if_unchanged(
            connection,
            read_rate=learnt,
            read_next_send_at=cursor,
            rate=rate,
            ceiling=ceiling,
            next_send_at=pacing.widened(view, cursor, learnt=learnt, lowered=rate),
            now=now,
            account=account,
        ):
            return
    lower_rate(connection, rate=rate, ceiling=ceiling, now=now, account=account)


def answered(
    connection: Connection, view: GateView, *, probing: bool, started: datetime, now: datetime
) -> None:
    """A request under the view's key that started at ``started`` was answered: the circuit
    closes (unless a failure was noted since), WIRAYA_API_KEY's pause ends only with its own
    answers (a 429 pause is not another account's to lift), and the key's learnt rate creeps up
    from the value read."""
    if view.own_account:
        if view.failures or view.api_paused_until or view.probe_until or probing:
            t.close_circuit_unless_failed_since(
                connection, started=started, now=now, lift_pause=False
            )
    elif view.failures or view.paused_until or view.probe_until or view.reason or probing:
        t.close_circuit_unless_failed_since(connection, started=started, now=now)
    if view.rate is None:
        return
    grown = rate_after_answer(view.rate, view.rate_ceiling)
    ceiling = view.rate_ceiling if grown is not None else None
    change_rate_if_unchanged(
        connection,
        read_rate=view.rate,
        rate=grown,
        ceiling=ceiling,
        now=now,
        account=account_of(view),
    )


def note_key_rate_limited(
    connection: Connection, *, account: str, now: datetime, reason: str, pause_until: datetime
) -> None:
    """A 429 under a key that is not WIRAYA_API_KEY: that key's workers pause at least until
    ``pause_until`` (never shortened); the other keys and the circuit are not its business (the
    API is up; this account is too fast). Its tenants' claims read before it are refused."""
    later = database_of(connection).greatest
    rows = key_gates.c
    statement = (
        update(key_gates)
        .where(rows.fingerprint == account)
        .values(
            paused_until=later(func.coalesce(rows.paused_until, pause_until), pause_until),
            reason=reason,
            version=rows.version + 1,
            updated_at=now,
        )
    )
    connection.execute(statement)


def lower_rate_if_unchanged(
    connection: Connection,
    *,
    read_rate: float | None,
    read_next_send_at: datetime | None,
    rate: float,
    ceiling: float | None,
    next_send_at: datetime | None,
    now: datetime,
    account: str | None = None,
) -> bool:
    """A 429: the key's learnt rate comes down to ``rate`` and the ceiling becomes the rate that
    drew it, with the key's slot cursor moved to ``next_send_at`` (the slot booked last, followed
    at the lowered rate), both from the values this worker read: a booking or a rate change
    meanwhile refuses it, and the worker reads again. Of the key's own row (``account``) or
    WIRAYA_API_KEY's, the gate row."""
    table, this = account_row(account)
    statement = (
        update(table)
        .where(
            this,
            t.unchanged(table.c.rate, read_rate),
            t.unchanged(table.c.next_send_at, read_next_send_at),
        )
        .values(rate=rate, rate_ceiling=ceiling, next_send_at=next_send_at, updated_at=now)
    )
    return bool(connection.execute(statement).rowcount == 1)


def lower_rate(
    connection: Connection,
    *,
    rate: float,
    ceiling: float | None,
    now: datetime,
    account: str | None = None,
) -> bool:
    """A 429: the learnt rate comes down to ``rate`` (a share of the rate that drew it), whatever
    answers raised it since that rate was read, and the ceiling becomes the rate that drew it. Only
    ever down: two workers never compound one 429, and a lower rate set meanwhile stays. Of the
    key's own row (``account``) or WIRAYA_API_KEY's, the gate row. The fallback of the guarded
    lowering above: it leaves the cursor as it is."""
    table, this = account_row(account)
    statement = (
        update(table)
        .where(this, or_(table.c.rate.is_(None), table.c.rate > rate))
        .values(rate=rate, rate_ceiling=ceiling, updated_at=now)
    )
    return bool(connection.execute(statement).rowcount == 1)


def change_rate_if_unchanged(
    connection: Connection,
    *,
    read_rate: float | None,
    rate: float | None,
    ceiling: float | None,
    now: datetime,
    account: str | None = None,
) -> bool:
    """Raise the learnt request rate from the value this worker read, after an answer: a concurrent
    change wins (a 429's decrease is never undone by growth)."""
    table, this = account_row(account)
    statement = (
        update(table)
        .where(this, t.unchanged(table.c.rate, read_rate))
        .values(rate=rate, rate_ceiling=ceiling, updated_at=now)
    )
    return bool(connection.execute(statement).rowcount == 1)
