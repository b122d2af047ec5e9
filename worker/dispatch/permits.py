"""Whose batch comes next, the gate's permit for it, and the claim that permit allows."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection

from models import Priority
from worker.dispatch.claim import ClaimedRow, claim, count_due, tenant_of
from worker.dispatch.gate.policy import Permit
from worker.dispatch.gate.state import GateView, held_keys
from worker.dispatch.turns import ALL_HELD

if TYPE_CHECKING:
    from worker.dispatch.dispatcher import Dispatcher


def beat_view(dispatcher: Dispatcher, connection: Connection) -> GateView:
    """The gate as beat counts dispatches by: with tenants' keys, no one key's brakes (its
    refusal, its 429 pause, its slots) hold back a dispatch (each passes over the tenants they
    hold), only the brakes every key observes; else the worker's own key's brakes."""
    view = dispatcher.gate.read(connection)
    if not dispatcher.turns.in_force:
        return view
    return replace(view, key_refused=False, paused_until=view.api_paused_until, next_send_at=None)


def due_batches(dispatcher: Dispatcher, now: datetime, room: int) -> int:
    """How many dispatches beat should queue for the due rows, at most ``room``: none while
    the gate holds every dispatch back; the count reads no further than ``room`` batches."""
    if room <= 0:
        return 0
    with dispatcher.engine.connect() as connection:
        view = beat_view(dispatcher, connection)
        wanted = min(room, dispatcher.gate.dispatches_wanted(view, now))
        if not wanted:
            return 0
        size = dispatcher.gate.batch_size(view)
        due = count_due(connection, now=now, cap=size * wanted)
    return min(wanted, -(-due // size))


def under_rows_key(
    dispatcher: Dispatcher,
    connection: Connection,
    permit: Permit,
    rows: list[ClaimedRow],
    now: datetime,
) -> Permit:
    """A head row's batch (no turn chosen) goes out under its tenant's key: a refusal it draws
    is noted under that key's fingerprint, and that key's own brakes apply, read again when the
    permit was read for another key (a lapsed lease's rows): while they hold, the permit is
    withdrawn (size 0) and the rows go back unspent."""
    if not rows:
        return permit
    key = dispatcher.senders.fingerprint(tenant_of(rows) or "")
    if key == permit.view.key:
        return permit
    view = dispatcher.gate.read(connection, key)
    if not (view.own_account or permit.view.own_account):
        return replace(permit, view=replace(permit.view, key=key))
    held = dispatcher.gate.held_after_wait(view, permit, now)
    return replace(permit, view=view, size=0 if held else permit.size, reason=held)


def turn_and_permit(
    dispatcher: Dispatcher, connection: Connection, now: datetime
) -> tuple[str | None, Permit]:
    """Whose batch comes next (None: the head row's) and the gate's permit read with the
    refusal of that tenant's key. Tenants whose refused key is not due a retry are passed
    over: a refused key stops its own tenants only; so are the lanes a used-up daily quota
    holds (ALL_HELD: every tenant due is held)."""
    gate, senders, quotas = dispatcher.gate, dispatcher.senders, dispatcher.quotas
    turn = None
    if dispatcher.turns.in_force:
        refused = held_keys(connection, now) | gate.held_accounts(connection, now)

        def held(tenant: str, lane: Priority) -> bool:
            return senders.fingerprint(tenant) in refused or quotas.held(tenant, lane, now)

        turn = dispatcher.turns.choose(connection, now, held=held)
    if turn == ALL_HELD:  # nothing this dispatch may send until a key's retry is due
        view = replace(gate.read(connection), key_refused=False)
        return turn, Permit(view, gate.batch_size(view))
    view = gate.read(connection, senders.fingerprint(turn) if turn is not None else None)
    return turn, gate.permit(connection, view, now)


def claim_under(
    dispatcher: Dispatcher,
    connection: Connection,
    permit: Permit,
    now: datetime,
    token: int,
    turn: str | None,
) -> list[ClaimedRow]:
    """The claim a permit allows: its size (one row while records are on trial), the lease,
    the gate's version, the process's lane floors, and whose batch it is (``turn``)."""
    n = dispatcher.recorder.claim_limit(permit.size)
    alone = dispatcher.gate.pacing.rate(permit.view) is None  # under a rate, requests are scarce
    view = permit.view
    rows = claim(
        connection,
        limit=n,
        lease=dispatcher.settings.lease,
        now=now,
        version=permit.view.version,
        token=token,
        urgent_alone=alone,
        floors=dispatcher.floors,
        tenant=turn,
        account=view.key if view.own_account else None,
        account_version=view.key_version,
    )
    served = tenant_of(rows)
    if served is not None:
        dispatcher.turns.served_now(served, now)
    return rows
