"""The request rate every worker shares: the rate in force and the slots it spaces requests by.

Wiraya limits each account (API key) on its own: each key has its own rate and slots,
WIRAYA_API_KEY's in the gate row, every other key's in its row of outbox_key_gates. While a rate
is in force (OUTBOX_RATE_LIMIT or, for a tenant's own key, OUTBOX_RATE_LIMITS; or the rate learnt
from 429s), each request under the key takes a slot from the key's cursor, booked by
compare-and-set at the rate read; a worker books only a slot it will wait for, so no slot is held
and not used. A cursor further ahead than any booking can reach was booked before the outbox's
clock stepped back (on SQLite the host's clock): it holds nothing, and the next slot is booked
from now. A 429 that lowers a key's rate moves that key's cursor on by the wider spacing
(`worker.dispatch.gate.accounts`), so the slot booked last before it is followed at the lowered
rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlalchemy import Connection

from worker.dispatch.gate import transitions as t
from worker.dispatch.gate.state import GateView
from worker.dispatch.retry import MIN_RATE

# A worker waits for a request slot at most this long; a later slot is not booked at all.
MAX_SLOT_WAIT = timedelta(seconds=2)
# What a lease allows, besides the slot wait, for the work between the claim and the request
# (booking the slot, screening, the policy's look-ups): the request still gets its whole timeout.
CLAIM_ALLOWANCE = timedelta(seconds=1)
SLOT_RETRIES = 5
SLOT_TOO_FAR = "the request rate's next slot is too far to wait for"


class Pacing:
    """The rate in force for every worker and this worker's slots."""

    def __init__(
        self, configured: float | None, per_key: Mapping[str, float] | None = None
    ) -> None:
        self.configured = configured  # WIRAYA_API_KEY's (OUTBOX_RATE_LIMIT)
        # By fingerprint: the rates of tenants' own keys (OUTBOX_RATE_LIMITS).
        self.per_key = dict(per_key or {})

    def configured_rate(self, view: GateView) -> float | None:
        """The rate configured for the view's key: its tenant's, or WIRAYA_API_KEY's."""
        return self.per_key.get(view.key) if view.own_account else self.configured

    def rate(self, view: GateView) -> float | None:
        """The request rate in force for every worker under the view's key: configured, learnt,
        the lower of both."""
        return self.in_force(view, view.rate)

    def in_force(self, view: GateView, learnt: float | None) -> float | None:
        """The rate in force under the view's key were its learnt rate ``learnt``."""
        rates = [rate for rate in (self.configured_rate(view), learnt) if rate]
        return min(rates) if rates else None

    def slot_reachable(self, view: GateView, now: datetime) -> bool:
        """Whether this worker would wait for the next slot (checked before claiming)."""
        cursor = self._live(view, view.next_send_at, now)
        if self.rate(view) is None or cursor is None:
            return True
        return cursor - now <= MAX_SLOT_WAIT

    def book_slot(self, connection: Connection, view: GateView, now: datetime) -> timedelta | None:
        """Book the next request slot and return the wait; None when it is too far to wait for.

        Only a slot this worker will wait for is booked, so no slot is held and not used. The
        booking is spaced by the rate it was read with: a 429 meanwhile refuses it.
        """
        cursor, learnt = view.next_send_at, view.rate
        account = view.key if view.own_account else None
        for _ in range(SLOT_RETRIES):
            rate = self.in_force(view, learnt)
            if rate is None:
                return timedelta(0)
            slot = max(self._live(view, cursor, now) or now, now)
            if slot - now > MAX_SLOT_WAIT:
                return None
            booked_next = slot + timedelta(seconds=1 / rate)
            if t.book_slot_if_unchanged(
                connection,
                read_next_send_at=cursor,
                read_rate=learnt,
                booked_next=booked_next,
                account=account,
            ):
                return slot - now
            cursor, learnt = t.read_slot_cursor(connection, account)
        return None

    def widened(
        self, view: GateView, cursor: datetime | None, *, learnt: float | None, lowered: float
    ) -> datetime | None:
        """The key's cursor, booked at the spacing of the rate in force with ``learnt``, moved on
        to the spacing of the rate in force with ``lowered`` (after a 429): the slot booked last is
        followed at the lowered rate, not at the rate it was booked at."""
        before, after = self.in_force(view, learnt), self.in_force(view, lowered)
        if cursor is None or before is None or after is None or after >= before:
            return cursor
        return cursor + timedelta(seconds=1 / after) - timedelta(seconds=1 / before)

    def _live(self, view: GateView, cursor: datetime | None, now: datetime) -> datetime | None:
        """The view's key's cursor, or None when it lies further ahead than any booking under
        that key leaves it (a clock stepped forward wrote it): the longest wait plus the key's
        widest spacing (a learnt rate never falls below MIN_RATE; a configured one is fixed)."""
        slowest = min(MIN_RATE, self.configured_rate(view) or MIN_RATE)
        furthest = MAX_SLOT_WAIT + timedelta(seconds=1 / slowest)
        return None if cursor is None or cursor - now > furthest else cursor
