"""Lane floors: where a process's last claim of the normal and bulk lanes ended.

The claim reads each lane in due order through the partial index of pending rows. That index
keeps an entry for every row claimed since the last vacuum, and while any snapshot older than
those claims is open (a long report query, a session left in a transaction, a replica's
feedback) none of them can even be marked dead: a claim that starts at the head of its lane
walks every one of them, and visits its row. A floor lets the next claim start right after the
last row this process claimed in the lane, past all of that.

A floor is a hint, never a promise that nothing lies below it: a row released unsent keeps its
old due time, and a producer's transaction may commit a row due before the floor. So a claim
above the floors that comes back short of its limit claims the rest from the head of each lane
at once, and every ``FULL_SCAN_EVERY``-th claim starts from the heads anyway: a row below a
floor waits at most that many of this process's full batches. A claim short even after that
has taken every due row: it leaves no floors, so at a trickle each claim reads once, from the
heads, instead of above a floor and then from the heads. (A claim for a tenant chosen by turns
keeps them: its tenant's rows running out says nothing of the others'.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from models import Priority

# The lanes that carry backlogs, and so long walks; urgent rows and lapsed leases are few.
FLOORED = (Priority.NORMAL, Priority.BULK)
FULL_SCAN_EVERY = 20
# Below every due time: the bounds of a claim that starts at the head of each lane.
_HEAD = (datetime(1970, 1, 1, tzinfo=UTC), 0)


@dataclass
class LaneFloors:
    """The (due time, id) after which each floored lane's next claim starts."""

    ends: dict[Priority, tuple[datetime, int]] = field(default_factory=dict)
    claims: int = 0  # claims since the last one from the heads of the lanes

    def in_force(self) -> bool:
        """Whether the next claim starts above the floors (counted: it is about to run)."""
        self.claims += 1
        if self.claims >= FULL_SCAN_EVERY:
            self.clear()
        return bool(self.ends)

    def clear(self) -> None:
        """The next claim starts from the head of each lane."""
        self.ends.clear()
        self.claims = 0

    def parameters(self) -> dict[str, Any]:
        """The claim statement's bounds, one pair per floored lane."""
        bounds: dict[str, Any] = {}
        for priority in FLOORED:
            at, row_id = self.ends.get(priority, _HEAD)
            bounds[f"floor_at_{int(priority)}"] = at
            bounds[f"floor_id_{int(priority)}"] = row_id
        return bounds

    def advance(self, claimed: list[tuple[object, int, object]]) -> None:
        """Move each lane's floor past the rows just claimed, given as (priority, id, due)."""
        ends = self.ends
        for priority, row_id, due in claimed:
            lane = _floored(priority)
            if lane is None:
                continue
            # Aware times (PostgreSQL's) compare as they are: only the floors are made UTC.
            moment = due if type(due) is datetime and due.tzinfo is not None else _moment(due)
            if moment is None:
                continue
            end = (moment, row_id)
            if lane not in ends or end > ends[lane]:
                ends[lane] = end
        for lane, (moment, row_id) in ends.items():
            ends[lane] = (moment.astimezone(UTC), row_id)


_LANE_OF = {int(lane): lane for lane in FLOORED}


def _floored(priority: object) -> Priority | None:
    return _LANE_OF.get(priority) if isinstance(priority, int) else None


def _moment(value: object) -> datetime | None:
    """A due time as the claim returns it (on SQLite, text), aware UTC; None if unreadable."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
