"""The request rate every worker shares: the rate in force and the slots it spaces requests by.

While a rate is in force (OUTBOX_RATE_LIMIT, or the rate learnt from 429s), each request takes
a slot from one cursor in the gate row, booked by compare-and-set; a worker books only a slot
it will wait for, so no slot is held and not used.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection

from worker.dispatch.gate import transitions as t
from worker.dispatch.gate.state import GateView

# A worker waits for a request slot at most this long; a later slot is not booked at all.
MAX_SLOT_WAIT = timedelta(seconds=2)
SLOT_RETRIES = 5
SLOT_TOO_FAR = "the request rate's next slot is too far to wait for"


class Pacing:
    """The rate in force for every worker and this worker's slots."""

    def __init__(self, configured: float | None) -> None:
        self.configured = configured

    def rate(self, view: GateView) -> float | None:
        """The request rate in force for every worker: configured, learnt, the lower of both."""
        rates = [rate for rate in (self.configured, view.rate) if rate]
        return min(rates) if rates else None

    def slot_reachable(self, view: GateView, now: datetime) -> bool:
        """Whether this worker would wait for the next slot (checked before claiming)."""
        if self.rate(view) is None or view.next_send_at is None:
            return True
        return view.next_send_at - now <= MAX_SLOT_WAIT

    def book_slot(self, connection: Connection, view: GateView, now: datetime) -> timedelta | None:
        """Book the next request slot and return the wait; None when it is too far to wait for.

        Only a slot this worker will wait for is booked, so no slot is held and not used.
        """
        rate = self.rate(view)
        if rate is None:
            return timedelta(0)
        spacing = timedelta(seconds=1 / rate)
        cursor = view.next_send_at
        for _ in range(SLOT_RETRIES):
            slot = max(cursor or now, now)
            if slot - now > MAX_SLOT_WAIT:
                return None
            if t.book_slot_if_unchanged(
                connection, read_next_send_at=cursor, booked_next=slot + spacing
            ):
                return slot - now
            cursor = t.read_slot_cursor(connection)
        return None
