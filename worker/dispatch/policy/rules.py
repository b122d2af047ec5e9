"""The sending policy applied to a screened batch: who is held, who fails, who goes.

Run by the dispatcher after the claim and the screen, before the request: a held message is
released to pending with the claim's attempt given back and its next_attempt_at at the moment
it may go, in the same guarded record as the batch's other rows; a suppressed or duplicate one
fails unsent. Rules in order: opt-outs, duplicates, quiet hours, the tenant's daily quota (counted
for the messages no earlier rule stopped), pacing (booked last, for the messages that will go).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, case, update

from models import Priority
from models.outbox import outbox_messages as outbox
from models.segments import segments_of
from worker.dispatch.outcomes import released
from worker.dispatch.policy import duplicates, opt_outs, pacing
from worker.dispatch.policy.quiet_hours import quiet_until
from worker.dispatch.policy.quotas import QUOTA_HELD, TenantQuotas, quota_reason
from worker.dispatch.record import RowResult
from worker.dispatch.screen import Outgoing, Unsendable
from worker.policy import Policy

TIME = "%Y-%m-%d %H:%M UTC"
# A booking the quota's counter kept refusing (every other worker booking the tenant at once):
# its messages wait this long, uncounted, and book again.
QUOTA_BUSY_WAIT = timedelta(seconds=1)


@dataclass
class Verdict:
    """A batch after the policy: what goes, what waits (released) and what fails unsent."""

    outgoing: list[Outgoing]
    held: list[RowResult] = field(default_factory=list)
    failed: list[Unsendable] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)  # held, suppressed, paced, duplicate
    segments: Counter[tuple[str, str]] = field(default_factory=Counter)  # (lane, encoding)


def apply(
    policy: Policy,
    connection: Connection,
    batch: list[Outgoing],
    now: datetime,
    unsent: Collection[int] = (),
    lease_end: datetime | None = None,
    quotas: TenantQuotas | None = None,
) -> Verdict:
    """The policy's verdict on ``batch`` at ``now`` (the outbox's clock); ``unsent`` are the
    claim's other rows, which the screen failed (no earlier copy of anything); no request of
    the batch starts after ``lease_end`` (quiet hours look that far ahead). With ``quotas``,
    the batch counts against its tenant's daily quota."""
    verdict = Verdict(outgoing=[])
    failed: dict[int, str] = {}
    held: dict[int, tuple[datetime, str]] = {}
    _opt_outs(policy, connection, batch, now, failed)
    _duplicates(policy, connection, batch, now, failed, unsent)
    _quiet_hours(policy, batch, now, (lease_end or now) - now, failed, held)
    if quotas is not None and quotas.quotas:
        _quotas(quotas, connection, batch, now, failed, held)
    _pacing(policy, connection, batch, now, failed, held)
    for item in batch:
        if item.id in failed:
            verdict.failed.append(Unsendable(item.row, failed[item.id]))
            verdict.counts[_rule_of(failed[item.id])] += 1
        elif item.id in held:
            until, reason = held[item.id]
            verdict.held.append(released(item.row, reason, until=until))
            verdict.counts[_held_by(reason)] += 1
        else:
            verdict.outgoing.append(item)
    _segments(connection, verdict)
    return verdict


def _held_by(reason: str) -> str:
    """The counter a hold adds to: paced, over_quota, or held (quiet hours)."""
    if reason.startswith("paced"):
        return "paced"
    return "over_quota" if reason.startswith(QUOTA_HELD) else "held"


def _rule_of(reason: str) -> str:
    """The counter a refusal adds to: suppressed, duplicate, or held (expired in quiet hours)."""
    word = reason.split(":", 1)[0].split(" ", 1)[0]
    return word if word in ("suppressed", "duplicate") else "held"


def _recipients(batch: list[Outgoing], skip: Collection[int]) -> set[str]:
    return {item.communication.recipient for item in batch if item.id not in skip}


def _opt_outs(
    policy: Policy,
    connection: Connection,
    batch: list[Outgoing],
    now: datetime,
    failed: dict[int, str],
) -> None:
    recipients = _recipients(batch, failed)
    listed = opt_outs.opted_out(connection, recipients)
    if policy.suppress_after_not_delivered:
        unlisted = recipients - listed.keys()
        count = policy.suppress_after_not_delivered
        listed.update(opt_outs.add_after_not_delivered(connection, unlisted, count, now))
    for item in batch:
        found = listed.get(item.communication.recipient)
        if found is not None and found[0].covers(item.row.priority):
            failed[item.id] = f"suppressed: {found[1] or 'on the opt-out list'}"


def _duplicates(
    policy: Policy,
    connection: Connection,
    batch: list[Outgoing],
    now: datetime,
    failed: dict[int, str],
    unsent: Collection[int],
) -> None:
    if not policy.dedupe_window or not batch:
        return
    recipients = _recipients(batch, failed)
    ids = [item.id for item in batch]
    since = now - policy.dedupe_window
    claimed = [*ids, *unsent]
    copies = duplicates.earlier_copies(connection, recipients, claimed, max(ids), since)
    for item in sorted(batch, key=lambda item: item.id):  # a batch's own copies count too
        copies.setdefault(item.communication.recipient, []).append(
            (item.id, item.communication.client_message_id, dict(item.communication.content))
        )
    for item in sorted(batch, key=lambda item: item.id):
        if item.id in failed:
            continue
        communication = item.communication
        first = duplicates.first_copy(
            copies, communication.recipient, communication.content, item.id, failed.keys()
        )
        if first is not None:
            failed[item.id] = f"duplicate of {first}"


def _quiet_hours(
    policy: Policy,
    batch: list[Outgoing],
    now: datetime,
    ahead: timedelta,
    failed: dict[int, str],
    held: dict[int, tuple[datetime, str]],
) -> None:
    window = policy.quiet_hours
    if window is None:
        return
    for item in batch:
        if item.id in failed or item.row.priority not in policy.quiet_lanes:
            continue
        until = quiet_until(window, item.communication.recipient, now, ahead)
        if until is None:
            continue
        _hold(item, until, f"held: quiet hours until {until:{TIME}}", failed, held)


def _quotas(
    quotas: TenantQuotas,
    connection: Connection,
    batch: list[Outgoing],
    now: datetime,
    failed: dict[int, str],
    held: dict[int, tuple[datetime, str]],
) -> None:
    """Count the messages still going against their tenant's quota; those that do not fit
    wait for the next quota day (or fail, expiring before it), no attempt spent."""
    going = [item for item in batch if item.id not in failed and item.id not in held]
    if not going:
        return
    going.sort(key=lambda item: (item.row.priority, item.row.id))  # urgent first, then by id
    granted, for_the_day = quotas.book(connection, going[0].tenant, going, now)
    until = quotas.quotas.next_day(now) if for_the_day else now + QUOTA_BUSY_WAIT
    why = "used up" if for_the_day else "counter busy"
    for item in going:
        if item.id in granted:
            continue
        _hold(item, until, quota_reason(why, until), failed, held)


def _hold(
    item: Outgoing,
    until: datetime,
    reason: str,
    failed: dict[int, str],
    held: dict[int, tuple[datetime, str]],
) -> None:
    """Hold ``item`` until then, no attempt spent; one that expires first fails, "expired:"."""
    if item.expires_at is not None and item.expires_at <= until:
        failed[item.id] = reason.replace("held:", "expired:", 1)
    else:
        held[item.id] = (until, reason)


def _pacing(
    policy: Policy,
    connection: Connection,
    batch: list[Outgoing],
    now: datetime,
    failed: dict[int, str],
    held: dict[int, tuple[datetime, str]],
) -> None:
    if not policy.min_interval:
        return
    first: dict[str, Outgoing] = {}
    for item in sorted(batch, key=lambda item: item.order):
        if item.id in failed or item.id in held:
            continue
        recipient = item.communication.recipient
        if recipient in first:  # one message per recipient in a batch; the rest wait in order
            until = now + policy.min_interval
            held[item.id] = (until, "paced: another message to this recipient goes first")
        else:
            first[recipient] = item
    booked, waits = pacing.book(connection, first.keys(), now, policy.min_interval)
    for recipient, item in first.items():
        if recipient not in booked:
            until = waits.get(recipient, now + policy.min_interval)
            held[item.id] = (until, f"paced: until {until:%Y-%m-%d %H:%M:%S} UTC")


def _segments(connection: Connection, verdict: Verdict) -> None:
    """Count what goes out in SMS parts, and store the count of a text whose row has none (a
    raw-SQL insert: the producer stored its own)."""
    missing = {}
    for item in verdict.outgoing:
        content = item.communication.content
        text = content.get("text")
        if content.get("$type") != "SMSFromAlpha" or not isinstance(text, str):
            continue
        parts = segments_of(text)
        if item.row.segments != parts.count:
            missing[item.id] = parts.count
        lane = Priority(item.row.priority).name.lower()
        verdict.segments[(lane, parts.encoding.value)] += parts.count
    if missing:
        statement = (
            update(outbox)
            .where(outbox.c.id.in_(list(missing)))
            .values(segments=case(missing, value=outbox.c.id))
        )
        connection.execute(statement)
