"""Delivery reports: Wiraya's delivery statuses, and the table where every report is kept.

Wiraya pushes a report for each SMS or call as it ends (its "communication callbacks"); the
receiver (`outbox receiver`) stores each one once in ``outbox_delivery_reports`` and keeps
``outbox_messages.delivery_status`` at the latest event of each message.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import BigInteger, Column, Identity, Index, Integer, Table, Text, text

from models.outbox import Base
from models.types import UtcDateTime


class DeliveryStatus(StrEnum):
    """A report's status as Wiraya documents it; every one but NEXTATTEMPT is final.

    A status Wiraya never named is stored as sent but is never final: a final status beats it,
    so a made-up word cannot pin a message's delivery status.
    """

    DELIVERED = "DELIVERED"
    """The SMS reached the phone, or the call was answered."""
    NOT_DELIVERED = "NOT_DELIVERED"
    """The SMS could not be delivered (e.g. the phone stayed off until it expired)."""
    NOT_WHITELISTED = "NOT_WHITELISTED"
    """SMS: the recipient is not on the account's whitelist."""
    OPTOUT = "OPTOUT"
    """The recipient has opted out."""
    FAILURE = "FAILURE"
    """SMS: the operator refused it."""
    UNKNOWN = "UNKNOWN"
    """SMS: the operator never said."""
    SPAM = "SPAM"
    """Held back as spam."""
    TEST = "TEST"
    """Sent in test mode: not delivered to anyone."""
    NEXTATTEMPT = "NEXTATTEMPT"
    """Call: not reached this time, another attempt is planned. The only status not final."""
    NOTREACHED = "NOTREACHED"
    """Call: not reached, no attempt left."""
    INCORRECTNUMBER = "INCORRECTNUMBER"
    """Call: the number does not work."""

    @property
    def is_final(self) -> bool:
        """False for NEXTATTEMPT alone."""
        return is_final_status(self.value)


NON_FINAL_STATUSES = frozenset({DeliveryStatus.NEXTATTEMPT.value})
FINAL_DELIVERY_STATUSES = frozenset(status.value for status in DeliveryStatus) - NON_FINAL_STATUSES


def is_final_status(status: str) -> bool:
    """Whether a status ends the message's story: the documented ones but NEXTATTEMPT do."""
    return status in FINAL_DELIVERY_STATUSES


# Every report Wiraya pushed, once: a report is identified by its tracking id, status and
# doneAt (reports without doneAt by tracking id and status), so a repeat changes nothing.
outbox_delivery_reports = Table(
    "outbox_delivery_reports",
    Base.metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), Identity(), primary_key=True),
    Column("tracking_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    # When the event happened, as the report says (doneAt); NULL when it does not say.
    Column("done_at", UtcDateTime, nullable=True),
    Column("received_at", UtcDateTime, nullable=False),
    # The report object as received, JSON text (unknown fields included).
    Column("report", Text, nullable=False),
    # The outbox message it is about, once a message with that tracking id exists.
    Column("message_id", BigInteger().with_variant(Integer(), "sqlite"), nullable=True),
    Index(
        "uq_outbox_delivery_reports_tracking_id_status_done_at",
        "tracking_id",
        "status",
        "done_at",
        unique=True,
    ),
    Index(
        "uq_outbox_delivery_reports_undated",
        "tracking_id",
        "status",
        unique=True,
        postgresql_where=text("done_at IS NULL"),
        sqlite_where=text("done_at IS NULL"),
    ),
    # Unmatched reports by tracking id: what the trigger marks matched, and what stats count.
    Index(
        "ix_outbox_delivery_reports_unmatched",
        "tracking_id",
        postgresql_where=text("message_id IS NULL"),
        sqlite_where=text("message_id IS NULL"),
    ),
    # A message's reports: what the prune deletes with it.
    Index(
        "ix_outbox_delivery_reports_message_id",
        "message_id",
        postgresql_where=text("message_id IS NOT NULL"),
        sqlite_where=text("message_id IS NOT NULL"),
    ),
    # Unmatched reports by when they came: what the prune deletes after their window.
    Index(
        "ix_outbox_delivery_reports_unmatched_received",
        "received_at",
        postgresql_where=text("message_id IS NULL"),
        sqlite_where=text("message_id IS NULL"),
    ),
)
