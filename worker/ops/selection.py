"""Which rows an operator means, and what a pending row has been through, as SQL conditions.

The selection is what `outbox retry` and `outbox cancel` take from the command line. A pending
row is *retrying* after a worker's failed try that spent an attempt, and *may have reached
Wiraya* when a request holding it may have got through (see `may_have_reached_wiraya`).

Text matching ignores case beyond ASCII on both databases (``Database.contains_any_case``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, not_, or_

from models import Priority, Status
from models.databases import database_of
from models.outbox import outbox_messages as outbox

# `outbox retry` starts the last error with this, so the row reads as retried by hand, not as
# a worker's retry, and still says how it failed.
RETRIED = "retried by an operator"
# What a release after a request with an unknown outcome writes in last_error; rows released
# by a worker older than the reach_evidence column (migration 0009) carry their evidence only
# there.
UNKNOWN_OUTCOME = ("TransportError: ", "ServerError: ")


@dataclass(frozen=True)
class Selection:
    """The rows an operator means; every criterion given must match (none given: all rows).

    ``since``/``until`` bound a time column that the statement names (``until`` excluded).
    """

    client_message_ids: tuple[str, ...] = ()
    error: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    priority: Priority | None = None
    tenant: str | None = None  # one tenant's messages ("" the default tenant's)

    def up_to(self, moment: datetime) -> Selection:
        """The same rows, but only those whose time column is before ``moment``.

        A command bounds its selection by the moment it counted it, so rows that arrive
        while it runs (a message enqueued, a message failing again) are not swept along.
        """
        until = moment if self.until is None else min(self.until, moment)
        return replace(self, until=until)


def selected(connection: Connection, selection: Selection, status: Status, time_column: str) -> Any:
    """The WHERE clause of an operator's selection among rows of ``status``."""
    conditions = [outbox.c.status == status]
    if selection.client_message_ids:
        conditions.append(outbox.c.client_message_id.in_(selection.client_message_ids))
    if selection.error is not None:
        conditions.append(_contains_any_case(connection, selection.error))
    if selection.priority is not None:
        conditions.append(outbox.c.priority == int(selection.priority))
    if selection.tenant is not None:
        conditions.append(outbox.c.tenant == selection.tenant)
    column = outbox.c[time_column]
    if selection.since is not None:
        conditions.append(column >= selection.since)
    if selection.until is not None:
        conditions.append(column < selection.until)
    return and_(*conditions)


def _contains_any_case(connection: Connection, needle: str) -> Any:
    return database_of(connection).contains_any_case(connection, outbox.c.last_error, needle)


def retried_error() -> Any:
    """The last error a retried row keeps: the mark, then how it had failed."""
    error = outbox.c.last_error
    return func.coalesce(RETRIED + "; it had failed: " + error, RETRIED)


def retrying() -> Any:
    """Pending after a try that spent an attempt (not a row an operator has just retried, nor
    one an outage or a 429 sent back unspent: those wait for the API, not for their turn)."""
    error = outbox.c.last_error
    tried = and_(outbox.c.attempts > 0, error.is_not(None))
    return and_(tried, not_(error.startswith(RETRIED, autoescape=True)))


def may_have_reached_wiraya() -> Any:
    """A pending row a request may already have delivered to Wiraya.

    A request holding it ended with its outcome unknown (``reach_evidence``, which no later
    attempt, answer or `outbox retry` clears), or a claim spent an attempt on it (it was sent
    and answered "try again", or its worker stopped mid-request), or its last release says so
    (a worker older than the evidence column).
    """
    error = outbox.c.last_error
    unknown = [error.startswith(prefix, autoescape=True) for prefix in UNKNOWN_OUTCOME]
    # Never NULL, so that its negation selects the others: no error is no evidence.
    released_unknown = and_(error.is_not(None), or_(*unknown))
    return or_(outbox.c.reach_evidence.is_not(None), outbox.c.attempts > 0, released_unknown)
