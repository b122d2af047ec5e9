"""The outbox table, ``outbox_messages``, as the public contract defines it, and its metadata."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    Identity,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from models.status import Status
from models.types import JsonDocument, UtcDateTime

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "pk": "pk_%(table_name)s",
}
STATUS_VALUES = ", ".join(f"'{status.value}'" for status in Status)


class Base(DeclarativeBase):
    """Declarative base holding the outbox's metadata (what Alembic compares against)."""

    metadata = MetaData(naming_convention=NAMING)


class OutboxMessage(Base):
    """One message to send; the row is the only source of truth about it."""

    __tablename__ = "outbox_messages"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), Identity(), primary_key=True
    )
    client_message_id: Mapped[str] = mapped_column(Text, unique=True)
    recipient: Mapped[str] = mapped_column(Text)
    content: Mapped[dict[str, Any]] = mapped_column(JsonDocument)
    status: Mapped[str] = mapped_column(Text, server_default=text(f"'{Status.PENDING.value}'"))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=func.now())
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    tracking_id: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, server_default=func.now())
    accepted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Lanes and lifetimes: lower priorities are claimed first; an expired message is never sent.
    priority: Mapped[int] = mapped_column(SmallInteger, server_default=text("1"))
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The worker's: the token of the claim holding a sending row (the record's guard), and
    # when the message first fell due (what OUTBOX_MAX_AGE_SECONDS counts from).
    claim_token: Mapped[int | None] = mapped_column(BigInteger)
    first_due_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The latest delivery report's status as Wiraya sends it, and when its event happened.
    delivery_status: Mapped[str | None] = mapped_column(Text)
    delivery_status_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # The worker's: requests holding this message that failed without an answer (5xx, a
    # timeout) since one holding it was last answered. Above 0 the message is a suspect.
    suspicion: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # Why a request holding the message may have reached Wiraya (its outcome unknown: a
    # timeout, a dropped connection, an unreadable answer). Set by the record, never cleared:
    # `outbox cancel` leaves such a message alone, whatever its later attempts met.
    reach_evidence: Mapped[str | None] = mapped_column(Text)
    # The producer's W3C trace context (models/trace_context.py), set only while a span was
    # active: what the batch's and the delivery report's spans link to.
    trace_context: Mapped[str | None] = mapped_column(Text)
    # SMS parts of a text the outbox knows (SMSFromAlpha), set at enqueue and by the screen;
    # None where the text lives in a Wiraya template.
    segments: Mapped[int | None] = mapped_column(SmallInteger)
    # The sender the message goes out for (models/tenant.py): its API key, rate and share.
    # "" is the default tenant, what a plain-SQL insert naming none gets.
    tenant: Mapped[str] = mapped_column(Text, server_default=text("''"))
    # The worker's: the quota day the message counted on against its tenant's daily quota
    # (models/quotas.py), set the first time it went past the quota; it never counts again.
    quota_day: Mapped[date | None] = mapped_column(Date)

    __table_args__ = (
        CheckConstraint(f"status IN ({STATUS_VALUES})", name="status"),
        CheckConstraint("attempts >= 0", name="attempts"),
        CheckConstraint("priority IN (0, 1, 2)", name="priority"),
        # What no worker could move, refused from a raw-SQL producer (on SQLite by triggers
        # of the same names, migration 0010): a sending row without a lease is never taken
        # back, an accepted one without a tracking id never sent.
        CheckConstraint("status <> 'sending' OR locked_until IS NOT NULL", name="sending_lease"),
        CheckConstraint(
            "status <> 'accepted' OR tracking_id IS NOT NULL", name="accepted_tracking_id"
        ),
        # The claim query's sources, each kept small by its WHERE: due pending rows, lane by
        # lane in due order, and sending rows by lease end (to take back a dead worker's rows).
        Index(
            "ix_outbox_messages_due",
            "priority",
            "next_attempt_at",
            "id",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        # Each tenant's due rows, lane by lane in due order: which tenants have rows due, and
        # one tenant's batch (worker/dispatch/turns.py).
        Index(
            "ix_outbox_messages_tenant_due",
            "priority",
            "tenant",
            "next_attempt_at",
            "id",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index(
            "ix_outbox_messages_lease",
            "locked_until",
            postgresql_where=text("status = 'sending'"),
            sqlite_where=text("status = 'sending'"),
        ),
        # Finished rows by when they finished, one small index per status: what prune deletes
        # in chunks (and the order its chunks lock rows in), and what counts failed and
        # cancelled rows without reading the accepted history.
        *(
            Index(
                f"ix_outbox_messages_{status.value}",
                "accepted_at" if status is Status.ACCEPTED else "updated_at",
                "id",
                postgresql_where=text(f"status = '{status.value}'"),
                sqlite_where=text(f"status = '{status.value}'"),
            )
            for status in (Status.ACCEPTED, Status.FAILED, Status.CANCELLED)
        ),
        # The sending policy finds a recipient's other messages: the duplicate guard's
        # earlier copies, and the delivery statuses that add a recipient to the opt-outs.
        Index("ix_outbox_messages_recipient", "recipient", "id"),
        # The delivery-report receiver finds messages by the tracking id a report names.
        Index(
            "ix_outbox_messages_tracking_id",
            "tracking_id",
            postgresql_where=text("tracking_id IS NOT NULL"),
            sqlite_where=text("tracking_id IS NOT NULL"),
        ),
    )

    @property
    def status_enum(self) -> Status:
        """The status as the enum."""
        return Status(self.status)

    def __repr__(self) -> str:
        return (
            f"OutboxMessage(id={self.id}, client_message_id={self.client_message_id!r}, "
            f"status={self.status!r}, attempts={self.attempts})"
        )


# The table itself, for SQLAlchemy Core statements (the worker's set-based SQL).
outbox_messages = cast(Table, OutboxMessage.__table__)
