"""The low-latency wake-up: LISTEN for the insert trigger's notifications on PostgreSQL."""

from __future__ import annotations

import logging
from datetime import timedelta

import psycopg
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)
CHANNEL = "outbox_messages"


def psycopg_dsn(url: str) -> str:
    """A libpq connection string for a SQLAlchemy PostgreSQL URL."""
    parsed = make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


class InsertListener:
    """Waits for 'rows were inserted' notifications; reconnects after a dropped connection."""

    def __init__(self, database_url: str) -> None:
        self.dsn = psycopg_dsn(database_url)
        self.connection: psycopg.Connection[object] | None = None

    def wait(self, timeout: timedelta) -> bool:
        """Block up to ``timeout``; True when at least one insert was committed meanwhile.

        Every notification already queued is consumed, so a burst of inserts wakes once.
        A failure to listen returns False after the timeout, as plain polling would.
        """
        try:
            connection = self._connect()
            seconds = max(timeout.total_seconds(), 0.0)
            woke = any(True for _ in connection.notifies(timeout=seconds, stop_after=1))
            if woke:
                for _ in connection.notifies(timeout=0.0):
                    pass
            return woke
        except psycopg.Error as error:
            log.warning("LISTEN %s failed, polling meanwhile: %s", CHANNEL, error)
            self.close()
            return False

    def _connect(self) -> psycopg.Connection[object]:
        if self.connection is None or self.connection.closed:
            connection = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
            connection.execute(f"LISTEN {CHANNEL}")
            self.connection = connection
        return self.connection

    def close(self) -> None:
        """Stop listening."""
        if self.connection is not None:
            self.connection.close()
            self.connection = None
