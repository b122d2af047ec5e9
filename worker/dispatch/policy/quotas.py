"""Daily quotas per tenant: count a batch against its tenant's quota, exactly, across workers.

``outbox_tenant_quotas`` holds what each tenant sent on each quota day, in messages and in SMS
segments. A worker books its batch with one conditional statement: it reads the tenant's
counts, grants the messages that fit, and moves the counts forward only where they are still
what it read (``book_if_unchanged``); refused, another worker booked first, and it reads again.
Of two workers booking at once the second books only what the first left: together they never
pass a limit. A message counts once, on the quota day it first goes past its quota (stored on
its row, ``quota_day``): a resend after a 429, a 5xx or a timeout counts nothing more. The
counts move before the rows are marked: a crash between the two counts a batch twice, never
lets one through uncounted.

A message that does not fit waits, unsent, until the next quota day begins; one of an exempt
lane (urgent, unless OUTBOX_QUOTA_EXEMPT_URGENT is false) goes whatever the counts and counts
too. When a booking finds the quota used up, the tenant's other due rows of the lanes it holds
are moved to the next quota day at once, unclaimed (``defer_due``), and the process passes over
the tenant at claim for a while (``TenantQuotas.held``): its backlog is neither claimed again
and again nor left due (an old due backlog is what the backlog-age alert pages for).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import Connection, bindparam, delete, or_, select, update

from models import Priority, Status, segments_of
from models.databases import database_of
from models.outbox import outbox_messages as outbox
from models.quotas import outbox_tenant_quotas as quotas
from worker.dispatch.screen import Outgoing
from worker.quotas import Quotas

QUOTA_HELD = "held: daily quota"  # how the reason of a message the quota holds begins
# A booking refused this many times in a row (other workers booking the same tenant at each
# try) gives up for now: its messages wait a moment, uncounted (never past the quota).
MAX_TRIES = 20
# How long a process passes over a tenant whose quota it saw used up before it claims one of
# its batches again (TenantQuotas).
RECHECK = timedelta(seconds=60)

_HERE = (quotas.c.day == bindparam("on_day"), quotas.c.tenant == bindparam("of_tenant"))
# -- usage -- A tenant's counts on a quota day (none: no row yet).
USAGE = select(quotas.c.messages, quotas.c.segments).where(*_HERE)
# -- book_if_unchanged -- Add to a tenant's counts where they are still what the worker read.
BOOK_IF_UNCHANGED = (
    update(quotas)
    .where(
        *_HERE,
        quotas.c.messages == bindparam("read_messages"),
        quotas.c.segments == bindparam("read_segments"),
    )
    .values(
        messages=quotas.c.messages + bindparam("add_messages"),
        segments=quotas.c.segments + bindparam("add_segments"),
    )
)
# -- counted -- Which of a batch's rows counted already (on any day): they count no more.
COUNTED = select(outbox.c.id).where(
    outbox.c.id.in_(bindparam("ids", expanding=True)), outbox.c.quota_day.is_not(None)
)
# -- mark_counted -- The day each booked row counted on (rows still under this claim's lease).
MARK_COUNTED = (
    update(outbox)
    .where(
        outbox.c.id.in_(bindparam("ids", expanding=True)),
        outbox.c.status == Status.SENDING,
        outbox.c.quota_day.is_(None),
    )
    .values(quota_day=bindparam("on_day"))
)


# -- defer_due -- Move up to ``chunk`` of a tenant's due pending rows of some lanes to when its
# next quota day begins, unclaimed, the reason stored (rows a claim holds are passed over).
_DUE = (
    select(outbox.c.id)
    .where(
        outbox.c.status == Status.PENDING,
        outbox.c.tenant == bindparam("of_tenant"),
        outbox.c.priority.in_(bindparam("lanes", expanding=True)),
        outbox.c.next_attempt_at <= bindparam("now", type_=outbox.c.next_attempt_at.type),
        outbox.c.quota_day.is_(None),  # one that counted already goes whatever the quota
        # One expiring before then is left due: claimed, the policy fails it as expired.
        or_(outbox.c.expires_at.is_(None), outbox.c.expires_at > bindparam("until")),
    )
    .limit(bindparam("chunk"))
    .with_for_update(skip_locked=True)
)
DEFER_DUE = (
    update(outbox)
    .where(outbox.c.id.in_(_DUE.scalar_subquery()), outbox.c.status == Status.PENDING)
    .values(
        next_attempt_at=bindparam("until", type_=outbox.c.next_attempt_at.type),
        last_error=bindparam("reason"),
    )
)
DEFER_CHUNK = 5_000


@dataclass(frozen=True)
class Wanted:
    """A message asking to count against its tenant's quota."""

    id: int
    segments: int  # SMS parts where known, else 0
    exempt: bool = False  # of an exempt lane: it goes whatever the counts


@dataclass(frozen=True)
class Usage:
    """A tenant's counts on a quota day."""

    messages: int = 0
    segments: int = 0


@dataclass(frozen=True)
class Limits:
    """A tenant's daily limits (None: no limit of that kind)."""

    messages: int | None = None
    segments: int | None = None

    def used_up(self, usage: Usage) -> bool:
        """Whether either limit is reached: nothing more of the tenant's may go that day."""
        return (self.messages is not None and usage.messages >= self.messages) or (
            self.segments is not None and usage.segments >= self.segments
        )

    def fits(self, usage: Usage, segments: int) -> bool:
        """Whether one more message of ``segments`` parts stays within both limits."""
        if self.used_up(usage):
            return False
        within_messages = self.messages is None or usage.messages + 1 <= self.messages
        within_segments = self.segments is None or usage.segments + segments <= self.segments
        return within_messages and within_segments


@dataclass(frozen=True)
class Booking:
    """What a booking granted, and the tenant's counts after it (None: it gave up)."""

    granted: frozenset[int]
    usage: Usage | None


def usage(connection: Connection, tenant: str, day: date) -> Usage:
    """``tenant``'s counts on ``day``, its row made when it has none yet."""
    found = connection.execute(USAGE, {"on_day": day, "of_tenant": tenant}).first()
    if found is not None:
        return Usage(found.messages, found.segments)
    new = database_of(connection).insert(quotas).values(day=day, tenant=tenant)
    connection.execute(new.on_conflict_do_nothing(index_elements=["day", "tenant"]))
    return usage(connection, tenant, day)


def book_if_unchanged(
    connection: Connection, tenant: str, day: date, read: Usage, added: Usage
) -> bool:
    """Add ``added`` to ``tenant``'s counts on ``day`` if they are still ``read``."""
    parameters = {
        "on_day": day,
        "of_tenant": tenant,
        "read_messages": read.messages,
        "read_segments": read.segments,
        "add_messages": added.messages,
        "add_segments": added.segments,
    }
    return connection.execute(BOOK_IF_UNCHANGED, parameters).rowcount == 1


def fitting(read: Usage, limits: Limits, wanted: Sequence[Wanted]) -> list[Wanted]:
    """The messages that go, in order: every exempt one, and each other one that fits in what
    the ones before it left."""
    granted, running = [], read
    for message in wanted:
        if message.exempt or limits.fits(running, message.segments):
            granted.append(message)
            running = Usage(running.messages + 1, running.segments + message.segments)
    return granted


def book(
    connection: Connection, tenant: str, day: date, limits: Limits, wanted: Sequence[Wanted]
) -> Booking:
    """Count what fits of ``wanted`` against ``tenant``'s quota on ``day``, exactly, whatever
    other workers book at once (``connection`` commits each statement on its own)."""
    for _ in range(MAX_TRIES):
        read = usage(connection, tenant, day)
        granted = fitting(read, limits, wanted)
        added = Usage(len(granted), sum(message.segments for message in granted))
        if not granted or book_if_unchanged(connection, tenant, day, read, added):
            after = Usage(read.messages + added.messages, read.segments + added.segments)
            return Booking(frozenset(message.id for message in granted), after)
    return Booking(frozenset(), None)


def counted_already(connection: Connection, ids: Collection[int]) -> set[int]:
    """Which of ``ids`` counted against a quota before (a resend)."""
    if not ids:
        return set()
    return set(connection.scalars(COUNTED, {"ids": sorted(ids)}))


def mark_counted(connection: Connection, ids: Collection[int], day: date) -> None:
    """Store the day ``ids`` counted on: they never count again."""
    if ids:
        connection.execute(MARK_COUNTED, {"ids": sorted(ids), "on_day": day})


def defer_due(
    connection: Connection,
    tenant: str,
    lanes: Collection[int],
    now: datetime,
    until: datetime,
    reason: str,
) -> int:
    """Move ``tenant``'s due pending rows of ``lanes`` to ``until`` with ``reason``, a chunk a
    statement (short locks; a claim's rows passed over); how many moved."""
    moved, parameters = 0, {"of_tenant": tenant, "lanes": sorted(lanes), "now": now}
    while True:
        chunk = {**parameters, "chunk": DEFER_CHUNK, "until": until, "reason": reason}
        count = connection.execute(DEFER_DUE, chunk).rowcount
        moved += count
        if count < DEFER_CHUNK:
            return moved


def quota_reason(why: str, until: datetime) -> str:
    """Why a message waits for its tenant's quota (``why``: used up, counter busy)."""
    return f"{QUOTA_HELD} {why} until {until:%Y-%m-%d %H:%M} UTC"


def prune_counters(connection: Connection, before: date) -> int:
    """Delete the counters of quota days before ``before`` (beat's prune); how many went."""
    return connection.execute(delete(quotas).where(quotas.c.day < before)).rowcount


def segments_counted(item: Outgoing) -> int:
    """The SMS parts a message counts as: its stored count, else its text's (SMSFromAlpha);
    0 where the text is a Wiraya template, unknown to the outbox."""
    if isinstance(item.row.segments, int):
        return item.row.segments
    content = item.communication.content
    text = content.get("text")
    if content.get("$type") == "SMSFromAlpha" and isinstance(text, str):
        return segments_of(text).count
    return 0


class TenantQuotas:
    """One process's use of the quotas: booking batches, and the tenants it saw used up today.

    A used-up tenant is passed over at claim for RECHECK at a time, then one batch of its is
    claimed again: its messages that counted already (released by an outage or a 429 after
    they counted) go, and the others wait for the next quota day, so none of its rows is
    claimed more than once a day for nothing. This process's own released messages make it
    claim again at once (``forget``).
    """

    def __init__(self, quotas: Quotas) -> None:
        self.quotas = quotas
        # tenant -> (the quota day its quota was seen used up, when it was seen)
        self.used_up: dict[str, tuple[date, datetime]] = {}

    def limits(self, tenant: str) -> Limits:
        messages, segments = self.quotas.limits(tenant)
        return Limits(messages, segments)

    def held(self, tenant: str, priority: int, now: datetime) -> bool:
        """Whether a claim passes over ``tenant``'s rows of this lane: its quota is used up
        today, as far as this process saw (another's booking tells it at its next batch)."""
        seen = self.used_up.get(tenant)
        if seen is None or self.quotas.exempt(priority):
            return False
        day, at = seen
        return day == self.quotas.day_of(now) and at <= now < at + RECHECK

    def forget(self, tenant: str) -> None:
        """Claim ``tenant``'s rows again: messages of its that counted wait to be sent again."""
        self.used_up.pop(tenant, None)

    def book(
        self, connection: Connection, tenant: str, batch: Sequence[Outgoing], now: datetime
    ) -> tuple[set[int], bool]:
        """The ids of ``batch`` (one tenant's, in order) that may go now, and whether the rest
        wait for the next quota day (False: the counter was too busy, they wait a moment)."""
        limits = self.limits(tenant)
        if limits == Limits():
            return {item.id for item in batch}, True
        again = counted_already(connection, [item.id for item in batch])
        wanted = [
            Wanted(item.id, segments_counted(item), self.quotas.exempt(item.row.priority))
            for item in batch
            if item.id not in again
        ]
        day = self.quotas.day_of(now)
        booking = book(connection, tenant, day, limits, wanted)
        mark_counted(connection, booking.granted, day)
        if booking.usage is not None and limits.used_up(booking.usage):
            self.used_up[tenant] = (day, now)
            until = self.quotas.next_day(now)
            held = [lane for lane in Priority if not self.quotas.exempt(lane)]
            defer_due(connection, tenant, held, now, until, quota_reason("used up", until))
        return again | booking.granted, booking.usage is not None
