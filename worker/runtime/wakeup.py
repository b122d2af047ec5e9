"""The low-latency wake-up: hear inserts as they commit (PostgreSQL LISTEN, SQLite's newest id)."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Protocol

import psycopg
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from worker.database import driver_url, make_engine
from worker.settings import Settings

log = logging.getLogger(__name__)
CHANNEL = "outbox_messages"
NEWEST_ID = text("SELECT max(id) FROM outbox_messages")


class InsertWatcher(Protocol):
    """What beat waits on between ticks."""

    def start(self) -> None:
        """Begin hearing inserts now, before beat's first look for due rows (no gap between)."""
        ...

    def wait(self, timeout: timedelta) -> bool: ...

    def close(self) -> None: ...


def insert_watcher(settings: Settings) -> InsertWatcher | None:
    """The database's way of hearing inserts, or None when OUTBOX_NOTIFY is off.

    On PostgreSQL it LISTENs on OUTBOX_LISTEN_URL when set, else on the database URL; behind
    a transaction pooler without a listen URL there is nowhere to listen, and one line says
    that beat polls instead.
    """
    if not settings.notify_enabled:
        return None
    if not settings.database.listens_for_inserts:
        return NewestRowWatcher(settings.database_url)
    listen_on = settings.listen_on
    if listen_on is None:
        log.warning(
            "not waking on inserts: LISTEN does not work through a transaction pooler "
            "(OUTBOX_DATABASE_URL has ?pooler=transaction); polling every %g s: set "
            "OUTBOX_LISTEN_URL to a direct PostgreSQL connection to wake on inserts",
            settings.poll_interval.total_seconds(),
        )
        return None
    shown = make_url(listen_on).render_as_string(hide_password=True)
    log.info("waking on inserts: LISTEN %s on %s", CHANNEL, shown)
    return InsertListener(listen_on)


def _wait_out(deadline: float) -> bool:
    """After a failure, wait as long as asked (as a plain poll would): no insert was heard.

    Returning at once would send beat straight back to a database that is down, in a loop.
    """
    time.sleep(max(deadline - time.monotonic(), 0.0))
    return False


def psycopg_dsn(url: str) -> str:
    """A libpq connection string for a SQLAlchemy PostgreSQL URL."""
    parsed = driver_url(url).set(drivername="postgresql")
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
        seconds = max(timeout.total_seconds(), 0.0)
        deadline = time.monotonic() + seconds
        try:
            connection = self._connect()
            woke = any(True for _ in connection.notifies(timeout=seconds, stop_after=1))
            if woke:
                for _ in connection.notifies(timeout=0.0):
                    pass
            return woke
        except psycopg.Error as error:
            log.warning("LISTEN %s failed, polling meanwhile: %s", CHANNEL, error)
            self.close()
            return _wait_out(deadline)

    def start(self) -> None:
        """LISTEN now; a failure is logged, and the next wait tries again."""
        try:
            self._connect()
        except psycopg.Error as error:
            log.warning("LISTEN %s failed, polling meanwhile: %s", CHANNEL, error)
            self.close()

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


class NewestRowWatcher:
    """SQLite has no notifications: read the newest row id every ``every`` and wake on change.

    One indexed read of the rowid; the worker's own updates leave it alone, so only
    inserts (and pruning, harmlessly) wake.
    """

    def __init__(self, database_url: str, every: timedelta = timedelta(milliseconds=50)) -> None:
        self.engine = make_engine(database_url)
        self.every = every.total_seconds()
        self.connection: Connection | None = None
        self.newest: int | None = None

    def wait(self, timeout: timedelta) -> bool:
        """Block up to ``timeout``; True as soon as the newest id differs from the last one seen.

        The first read only sets the baseline. A failure to read returns False after the
        timeout, as plain polling would.
        """
        deadline = time.monotonic() + max(timeout.total_seconds(), 0.0)
        try:
            while True:
                newest, seen = self._read_newest(), self.newest
                self.newest = newest
                if seen is not None and newest != seen:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                time.sleep(min(self.every, remaining))
        except SQLAlchemyError as error:
            log.warning("watching %s for inserts failed, polling meanwhile: %s", CHANNEL, error)
            self.close()
            return _wait_out(deadline)

    def start(self) -> None:
        """Take the baseline now: an insert after this wakes the next wait."""
        try:
            self.newest = self._read_newest()
        except SQLAlchemyError as error:
            log.warning("watching %s for inserts failed, polling meanwhile: %s", CHANNEL, error)
            self.close()

    def _read_newest(self) -> int:
        if self.connection is None:
            self.connection = self.engine.connect()
        newest = self.connection.scalar(NEWEST_ID)
        self.connection.rollback()  # end the read: the next one sees later commits
        return int(newest or 0)

    def close(self) -> None:
        """Stop watching."""
        if self.connection is not None:
            self.connection.close()
            self.connection = None
