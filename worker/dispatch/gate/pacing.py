"""The request rate every worker shares: the rate in force and the slots it spaces requests by.

Wiraya limits each account (API key) on its own: each key has its own rate and slots,
WIRAYA_API_KEY's in the gate row, every other key's in its row of outbox_key_gates. While a rate
is in force (OUTBOX_RATE_LIMIT or, for a tenant's own key, OUTBOX_RATE_LIMITS; or the rate learnt
from 429s), each request under the key takes a slot from the key's cursor, booked by
compare-and-set; a worker books only a slot it will wait for, so no slot is held and not used. A
cursor further ahead than any booking can reach was booked before the outbox's clock stepped back
(on SQLite the host's clock): it holds nothing, and the next slot is booked from now.
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
        # The furthest ahead a booking leaves the cursor: the longest wait plus the widest
        # spacing (the learnt rate never falls below MIN_RATE, the configured one is fixed).
        slowest = min([MIN_RATE, *(rate for rate in (configured, *self.per_key.values()) if rate)])
        self.furthest = MAX_SLOT_WAIT + timedelta(seconds=1 / slowest)

    def configured_rate(self, view: GateView) -> float | None:
        """The rate configured for the view's key: its tenant's, or WIRAYA_API_KEY's."""
        return self.per_key.get(view.key) if view.own_account else self.configured

    def rate(self, view: GateView) -> float | None:
        """The request rate in force for every worker under the view's key: configured, learnt,
        the lower of both."""
        rates = [rate for rate in (self.configured_rate(view), view.rate) if rate]
        return min(rates) if rates else None

    def slot_reachable(self, view: GateView, now: datetime) -> bool:
        """Whether this worker would wait for the next slot (checked before claiming)."""
        cursor = self._live(view.next_send_at, now)
        if self.rate(view) is None or cursor is None:
            return True
        return cursor - now <= MAX_SLOT_WAIT

    def book_slot(self, connection: Connection, view: GateView, now: datetime) -> timedelta | None:
        """Book the next request slot and return the wait; None when it is too far to wait for.

        Only a slot this worker will wait for is booked, so no slot is held and not used.
        """
        rate = self.rate(view)
        if rate is None:
            return timedelta(0)
        spacing = timedelta(seconds=1 / rate)
        cursor = view.next_send_at
        account = view.key if view.own_account else None
        for _ in range(SLOT_RETRIES):
            slot = max(self._live(cursor, now) or now, now)
            if slot - now > MAX_SLOT_WAIT:
                return None
            if t.book_slot_if_unchanged(
                connection, read_next_send_at=cursor, booked_next=slot + spacing, account=account
            ):
                return slot - now
            cursor = t.read_slot_cursor(connection, account)
        return None

    def _live(self, cursor: datetime | None, now: datetime) -> datetime | None:
        """The cursor, or None when it lies further ahead than any booking leaves it."""
        return None if cursor is None or cursor - now > self.furthest else cursor
