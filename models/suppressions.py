"""The opt-out list, ``outbox_suppressions``: recipients no message of theirs goes out to."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import CheckConstraint, Column, Table, Text, func

from models.outbox import Base
from models.priority import Priority
from models.types import UtcDateTime


class Scope(StrEnum):
    """Which lanes an opt-out covers."""

    CAMPAIGNS = "campaigns"
    """Normal and bulk messages: a person who opted out still gets the code they asked for."""
    ALL_LANES = "all"
    """Every lane, urgent included."""

    def covers(self, priority: int) -> bool:
        """Whether a message of ``priority`` to the recipient is held back by this opt-out."""
        return self is Scope.ALL_LANES or priority != Priority.URGENT


class Source(StrEnum):
    """Who added an opt-out."""

    OPERATOR = "operator"
    """`outbox suppress add`, or the Python API."""
    REPORTS = "reports"
    """OUTBOX_SUPPRESS_AFTER_NOT_DELIVERED: that many NOT_DELIVERED reports in a row."""


SCOPES = ", ".join(f"'{scope.value}'" for scope in Scope)

outbox_suppressions = Table(
    "outbox_suppressions",
    Base.metadata,
    Column("recipient", Text, primary_key=True),
    Column("scope", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False, server_default=func.now()),
    CheckConstraint(f"scope IN ({SCOPES})", name="scope"),
)

# When each recipient's last message was sent, across workers: a worker books a send by
# moving it forward, in one conditional statement (worker/dispatch/policy/pacing.py).
outbox_recipient_pacing = Table(
    "outbox_recipient_pacing",
    Base.metadata,
    Column("recipient", Text, primary_key=True),
    Column("sent_at", UtcDateTime, nullable=False),
)
