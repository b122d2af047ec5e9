"""Lanes of traffic: how urgent a message is; lower is claimed first."""

from enum import IntEnum


class Priority(IntEnum):
    """Stored as a smallint in ``outbox_messages.priority``; every claim takes lower values first.

    Strict priority: while urgent messages are due, no normal or bulk message is claimed.
    """

    URGENT = 0
    """Verification codes, alerts: never waits behind a backlog."""
    NORMAL = 1
    """The default: what a plain SQL insert gets."""
    BULK = 2
    """Campaigns, reminders: sent when nothing more urgent is due."""
