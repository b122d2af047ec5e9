"""The dispatch gate: one row of sending state shared by all workers (breaker, Retry-After)."""

from __future__ import annotations

from sqlalchemy import Column, Integer, Table, Text, text

from models.outbox import Base
from models.types import UtcDateTime

GATE_NAME = "wiraya"

# Every worker process reads this row before a batch, so a pause decided by one
# (an open circuit, a 429's Retry-After, a 401) holds for all of them.
dispatch_gate = Table(
    "outbox_dispatch_gate",
    Base.metadata,
    Column("name", Text, primary_key=True),
    # No batch may be sent before this time (Retry-After floor, circuit cool-down).
    Column("paused_until", UtcDateTime),
    # Request-level failures in a row; at the threshold the circuit is open.
    Column("failures", Integer, nullable=False, server_default=text("0")),
    # Why sending is paused, for the CLI, metrics and logs.
    Column("reason", Text),
    # The largest batch the API accepted after a too-large answer (null: the configured size).
    Column("batch_limit", Integer),
    # SHA-256 prefix of an API key the API refused (401/403): that key sends no more.
    Column("refused_key", Text),
    # Minimum spacing between requests after a 429, in milliseconds (0: no spacing).
    Column("spacing_ms", Integer, nullable=False, server_default=text("0")),
    Column("next_send_at", UtcDateTime),
    Column("updated_at", UtcDateTime),
)
