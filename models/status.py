"""The life of an outbox message: its statuses and which of them are final."""

from enum import StrEnum


class Status(StrEnum):
    """Where a message stands; stored as text in ``outbox_messages.status``.

    pending -> sending -> accepted, or back to pending with a later next_attempt_at,
    or failed; cancelled by an operator. A sending row whose lease ended is due again.
    """

    PENDING = "pending"
    """Waiting for its next_attempt_at; new rows start here."""
    SENDING = "sending"
    """Claimed by a worker until locked_until; the API call may be under way."""
    ACCEPTED = "accepted"
    """Wiraya enqueued it; tracking_id is stored. Final."""
    FAILED = "failed"
    """Permanently refused, invalid, expired or out of attempts; last_error says why. Final."""
    CANCELLED = "cancelled"
    """Withdrawn by an operator before it was accepted. Final."""

    @property
    def is_final(self) -> bool:
        """True for the statuses a message never leaves."""
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({Status.ACCEPTED, Status.FAILED, Status.CANCELLED})
