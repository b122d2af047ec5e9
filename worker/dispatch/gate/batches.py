"""The batch size every worker shares: grown past what the API took, limited by what it refused.

The API's item limit is undocumented and may change. Batches start at OUTBOX_BATCH_SIZE and
double past each size the API has taken whole (the proven size), up to OUTBOX_BATCH_SIZE_MAX.
A too-large answer limits them: above the proven size, to half the refused size but never
below the proven one (one oversized message does not shrink every batch); a refused batch whose
halves the API took was refused for its size, so the limit and a proven size gone stale follow
the API down. The limit creeps back: a batch answered at the limit doubles it now and then,
until it reaches OUTBOX_BATCH_SIZE and is lifted.
"""

from __future__ import annotations

import random
from datetime import datetime

from sqlalchemy import Connection

from worker.dispatch.gate import batch_transitions as t
from worker.dispatch.gate.state import GateView
from worker.settings import Settings

# The chance that a batch answered at the learnt limit doubles the limit: about one batch in
# this many tries twice the size, so a limit the API raised again is found, slowly.
LIMIT_CREEP_CHANCE = 1 / 32


class Batches:
    """The batch size in force for every worker, and what answers change of it."""

    def __init__(self, settings: Settings, rng: random.Random) -> None:
        self.settings = settings
        self.rng = rng

    def size(self, view: GateView) -> int:
        """OUTBOX_BATCH_SIZE, doubled past each size the API has taken whole, up to the cap
        (OUTBOX_BATCH_SIZE_MAX), and never above a limit the API imposed."""
        grown = max(self.settings.batch_size, 2 * (view.batch_proven or 0))
        size = min(grown, self.settings.batch_size_cap)
        return min(size, view.batch_limit) if view.batch_limit else size

    def answered(self, connection: Connection, view: GateView, *, size: int, now: datetime) -> None:
        """A batch of ``size`` was answered: the proven size grows, the limit may creep up."""
        if size > (view.batch_proven or 0):
            t.prove_batch_size(connection, size=size)
        limit = view.batch_limit
        if limit is not None and size >= limit and self.rng.random() < LIMIT_CREEP_CHANCE:
            crept = 2 * limit if 2 * limit < self.settings.batch_size else None
            t.raise_batch_limit_if_unchanged(connection, read_limit=limit, limit=crept, now=now)

    def too_large(self, connection: Connection, *, size: int, now: datetime) -> None:
        """The API said a request of ``size`` messages is too large (items or bytes): smaller
        batches from now on, but never smaller than the largest batch the API answered, so
        one oversized message cannot shrink every batch."""
        t.limit_batch_size_to_proven(connection, size=size, now=now)

    def too_large_for_its_size(self, connection: Connection, *, halves: int, now: datetime) -> None:
        """The API refused a batch as too large but took both its halves (the larger of
        ``halves`` messages): its size was too large, not a message. The limit follows the
        API down, below a proven size that has gone stale (the API lowered its limit)."""
        t.lower_batch_size_to(connection, size=halves, now=now)
