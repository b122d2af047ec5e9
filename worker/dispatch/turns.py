"""Whose batch comes next: waiting-time fairness between tenants within a lane.

Lanes stay strict across tenants: the lane served is the first with a row due (urgent, then
normal, then bulk); a dead worker's lapsed lease comes first, by the claim's own order. Within
the lane, each tenant with a row due has waited since the later of its oldest due row and the
last batch this process took for it; the tenant whose wait, times its weight
(OUTBOX_TENANT_WEIGHTS, 1 by default), is longest is served. A campaign's backlog therefore
counts as one waiting tenant, not as 300,000 waiting messages: a tenant that has just been served
waits its turn again, and one alone with rows due takes every batch (no capacity idles).

Which tenants have rows due in a lane is read by a walk over ix_outbox_messages_tenant_due, one
index probe per tenant with pending rows in it (docs/tenants.md#which-tenant-goes-first). The
turns are in force when settings name tenants (their keys or weights); without, a batch's
tenant is the one of the row the claim would take first, and a batch costs no statement more.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Integer, and_, bindparam, exists, func, select

from models import Priority, Status
from models.outbox import outbox_messages as outbox

LANES = (Priority.URGENT, Priority.NORMAL, Priority.BULK)
# No tenant a claim may serve: every one due is held back by its refused key ("." starts no
# tenant's name, so no row can be mistaken for it).
ALL_HELD = ".held"
MAX_TENANTS = 10_000  # read per lane at most: past it, the rest wait for the head rule


def _due_tenants_statement() -> Any:
    """Each tenant with pending rows in lane ``lane``, and its oldest row's due time, for the
    tenants whose oldest row is due at ``now``: a recursive walk, one probe per tenant."""
    now = bindparam("now", type_=outbox.c.next_attempt_at.type)
    lane = bindparam("lane", type_=Integer())
    pending = and_(outbox.c.status == Status.PENDING, outbox.c.priority == lane)
    walk = select(func.min(outbox.c.tenant).label("tenant")).where(pending)
    tenants = walk.cte("tenants", recursive=True)
    following = select(func.min(outbox.c.tenant)).where(pending, outbox.c.tenant > tenants.c.tenant)
    tenants = tenants.union_all(
        select(following.scalar_subquery()).where(tenants.c.tenant.is_not(None))
    )
    oldest = (
        select(func.min(outbox.c.next_attempt_at))
        .where(pending, outbox.c.tenant == tenants.c.tenant)
        .scalar_subquery()
        .label("oldest")
    )
    walked = select(tenants.c.tenant, oldest).where(tenants.c.tenant.is_not(None))
    listed = walked.limit(MAX_TENANTS).subquery()
    return select(listed.c.tenant, listed.c.oldest).where(listed.c.oldest <= now)


DUE_TENANTS = _due_tenants_statement()
LAPSED = select(
    exists().where(
        outbox.c.status == Status.SENDING,
        outbox.c.locked_until <= bindparam("now", type_=outbox.c.locked_until.type),
    )
)


class TenantTurns:
    """One process's memory of when it last served each tenant, and the choice it makes."""

    def __init__(self, weights: Mapping[str, float], *, in_force: bool = True) -> None:
        self.weights = weights
        self.in_force = in_force  # tenants named in settings: else the claim's head rule alone
        self.served: dict[str, datetime] = {}

    def choose(
        self,
        connection: Connection,
        now: datetime,
        held: Callable[[str, Priority], bool] = lambda _, __: False,
    ) -> str | None:
        """The tenant the next claim serves; None leaves it to the claim's head row (a lapsed
        lease is due, or no row is); ALL_HELD when every tenant due is ``held`` in its lane
        (its key is refused, its quota used up): the others' lanes are served as if its rows
        were not there."""
        if not self.in_force or connection.scalar(LAPSED, {"now": now}):
            return None
        any_held = False
        for lane in LANES:
            rows = connection.execute(DUE_TENANTS, {"lane": int(lane), "now": now}).all()
            due = [(tenant, oldest) for tenant, oldest in rows if not held(str(tenant), lane)]
            any_held = any_held or len(due) < len(rows)
            if due:
                waits = {
                    str(tenant): self._weighted_wait(tenant, oldest, now) for tenant, oldest in due
                }
                return max(sorted(waits), key=waits.__getitem__)
        return ALL_HELD if any_held else None

    def served_now(self, tenant: str, now: datetime) -> None:
        """A batch of ``tenant``'s was claimed at ``now``."""
        self.served[tenant] = now

    def _weighted_wait(self, tenant: str, oldest: datetime, now: datetime) -> float:
        last = self.served.get(tenant)
        since = oldest if last is None else max(oldest, last)
        return (now - since).total_seconds() * self.weights.get(tenant, 1.0)
