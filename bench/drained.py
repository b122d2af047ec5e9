"""When a timed drain is over, told without taking the drain's CPU: the sandbox counts first.

A benchmark that polls ``SELECT count(*)`` over the outbox every 50 ms times its own reads as
well as the drain: a count of 40,000 rows took about 20 ms of a core, a new connection's
server process as much again, on a machine of two cores the drain keeps busy, and with a
snapshot held open (bench_bloat) the count walks every row version left behind. Here the
sandbox's own counter of messages accepted (an HTTP read of a number) is watched until it
reaches the backlog; only then is the database asked, through one connection kept open,
whether any row of the drain is still pending or being sent: a probe of the lanes' partial
indexes, a few times at the very end.
"""

from __future__ import annotations

import time

import psycopg

from sandbox.testing import SandboxAdmin
from worker.ops.processes import wait_for

# Rows of the drain still to finish: each status probed through its own partial index.
_UNFINISHED = """
SELECT EXISTS (SELECT 1 FROM outbox_messages WHERE status = 'pending' AND ({where}))
    OR EXISTS (SELECT 1 FROM outbox_messages WHERE status = 'sending' AND ({where}))
"""


class DrainWatch:
    """Watches one drain: its sandbox's acceptances, then the outbox rows matching ``where``."""

    def __init__(self, url: str, sandbox_url: str, where: str = "TRUE") -> None:
        self.dsn = url.replace("postgresql+psycopg://", "postgresql://")
        self.admin = SandboxAdmin(sandbox_url)
        self.query = _UNFINISHED.format(where=where)
        self.start = self.accepted()

    def accepted(self) -> int:
        """Messages the sandbox accepted so far (a resend of one already accepted not counted)."""
        return int(self.admin.stats()["accepted"])

    def wait(self, messages: int, *, timeout: float, what: str) -> float:
        """Wait until the sandbox accepted ``messages`` more than at the start and the outbox
        recorded every matching row; the monotonic time the end was seen."""
        deadline = time.monotonic() + timeout
        wait_for(
            lambda: self.accepted() - self.start >= messages, timeout=timeout, what=what, every=0.02
        )
        with psycopg.connect(self.dsn, autocommit=True) as connection:

            def finished() -> bool:
                row = connection.execute(self.query).fetchone()
                return row is not None and not row[0]

            wait_for(finished, timeout=max(deadline - time.monotonic(), 1.0), what=what, every=0.02)
        return time.monotonic()
