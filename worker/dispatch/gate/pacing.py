"""The request rate every worker shares: the rate in force and the slots it spaces requests by.

While a rate is in force (OUTBOX_RATE_LIMIT, or the rate learnt from 429s), each request takes
a slot from one cursor in the gate row, booked by compare-and-set; a worker books only a slot
it will wait for, so no slot is held and not used. A cursor further ahead than any booking can
reach was booked before the outbox's clock stepped back (on SQLite the host's clock): it holds
nothing, and the next slot is booked from now. A 429 that lowers the rate moves the cursor on
by the wider spacing, so the slot booked last before it is followed at the lowered rate.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection

from worker.dispatch.gate import transitions as t
from worker.dispatch.gate.state import GateView
from worker.dispatch.retry import MIN_RATE

# A worker waits for a request slot at most this long; a later slot is not booked at all.
MAX_SLOT_WAIT = timedelta(seconds=2)
SLOT_RETRIES = 5
# A 429's lowering is refused by each booking made meanwhile; past this many, the rate comes
# down without moving the cursor (a booking burst lasts at most MAX_SLOT_WAIT).
LOWER_RETRIES = 20
SLOT_TOO_FAR = "the request rate's next slot is too far to wait for"


class Pacing:
    """The rate in force for every worker and this worker's slots."""

    def __init__(self, configured: float | None) -> None:
        self.configured = configured
        # The furthest ahead a booking leaves the cursor: the longest wait plus the widest
        # spacing (the learnt rate never falls below MIN_RATE, the configured one is fixed).
        self.furthest = MAX_SLOT_WAIT + timedelta(seconds=1 / min(MIN_RATE, configured or MIN_RATE))

    def rate(self, view: GateView) -> float | None:
        """The request rate in force for every worker: configured, learnt, the lower of both."""
        return self._in_force(view.rate)

    def slot_reachable(self, view: GateView, now: datetime) -> bool:
        """Whether this worker would wait for the next slot (checked before claiming)."""
        cursor = self._live(view.next_send_at, now)
        if self.rate(view) is None or cursor is None:
            return True
        return cursor - now <= MAX_SLOT_WAIT

    def book_slot(self, connection: Connection, view: GateView, now: datetime) -> timedelta | None:
        """Book the next request slot and return the wait; None when it is too far to wait for.

        Only a slot this worker will wait for is booked, so no slot is held and not used. The
        booking is spaced by the rate it was read with: a 429 meanwhile refuses it.
        """
        cursor, learnt = view.next_send_at, view.rate
        for _ in range(SLOT_RETRIES):
            rate = self._in_force(learnt)
            if rate is None:
                return timedelta(0)
            slot = max(self._live(cursor, now) or now, now)
            if slot - now > MAX_SLOT_WAIT:
                return None
            booked_next = slot + timedelta(seconds=1 / rate)
            if t.book_slot_if_unchanged(
                connection, read_next_send_at=cursor, read_rate=learnt, booked_next=booked_next
            ):
                return slot - now
            cursor, learnt = t.read_slot_cursor(connection)
        return None

    def lower(
        self, connection: Connection, *, rate: float, ceiling: float | None, now: datetime
    ) -> None:
        """A 429: the learnt rate comes down to ``rate``, only ever down, and the cursor moves on
        by the wider spacing: the slot booked last (perhaps still waited for) is followed at the
        lowered rate, not at the rate it was booked at."""
        for _ in range(LOWER_RETRIES):
            cursor, learnt = t.read_slot_cursor(connection)
            if learnt is not None and learnt <= rate:
                return  # another 429 brought it as low already
            widened = self._widened(
                cursor, before=self._in_force(learnt), after=self._in_force(rate)
            )
            if t.lower_rate_if_unchanged(
                connection,
                read_rate=learnt,
                read_next_send_at=cursor,
                rate=rate,
                ceiling=ceiling,
                next_send_at=widened,
                now=now,
            ):
                return
        t.lower_rate(connection, rate=rate, ceiling=ceiling, now=now)  # the rate comes down anyway

    def _in_force(self, learnt: float | None) -> float | None:
        rates = [rate for rate in (self.configured, learnt) if rate]
        return min(rates) if rates else None

    @staticmethod
    def _widened(
        cursor: datetime | None, *, before: float | None, after: float | None
    ) -> datetime | None:
        """The cursor booked at the spacing of ``before``, moved on to the spacing of ``after``."""
        if cursor is None or before is None or after is None or after >= before:
            return cursor
        return cursor + timedelta(seconds=1 / after) - timedelta(seconds=1 / before)

    def _live(self, cursor: datetime | None, now: datetime) -> datetime | None:
        """The cursor, or None when it lies further ahead than any booking leaves it."""
        return None if cursor is None or cursor - now > self.furthest else cursor
