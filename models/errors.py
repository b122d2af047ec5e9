"""The errors the producer API raises: bad input, a client_message_id already used, and a
connection that offers no transaction.

    ValueError                   the caller's input
    ├── InvalidMessage           a message refused before insert (``field`` and ``reason``)
    └── DuplicateMessage         a client_message_id already in the outbox
    RuntimeError                 the caller's set-up
    └── UnsupportedTransaction   a connection without a transaction to join (AUTOCOMMIT)

Builtins as roots, so a producer catches them as it catches its own validation errors; the
worker's errors have their own tree (`worker.errors`).
"""

from __future__ import annotations


class InvalidMessage(ValueError):
    """A message was refused before insert; ``field`` names what is wrong and ``reason`` why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class DuplicateMessage(ValueError):
    """The client_message_id is already in the outbox (the idempotency key was used before)."""

    def __init__(
        self, client_message_ids: list[str], detail: str = "already in the outbox"
    ) -> None:
        shown = ", ".join(client_message_ids[:5])
        more = f" and {len(client_message_ids) - 5} more" if len(client_message_ids) > 5 else ""
        super().__init__(f"client_message_id: {shown}{more} {detail}")
        self.client_message_ids = client_message_ids


class UnsupportedTransaction(RuntimeError):
    """The caller's connection offers no transaction for a message to belong to (AUTOCOMMIT);
    the message names the shape and what to use instead."""
