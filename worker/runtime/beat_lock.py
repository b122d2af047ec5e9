"""Exactly one beat: each holds a PostgreSQL advisory lock for its life; a second says so.

Two beats are safe (every wake-up is harmless, housekeeping is taken by compare-and-set) but
double the due-row counts and the wake-ups; most often one was left running beside a new
deployment's. The lock is a session's, on a connection of its own to the direct URL (the one
beat LISTENs on: through a transaction pooler no session lasts), so it ends with the process
however it ends, and its holder is named by the application_name it set.
"""

from __future__ import annotations

import logging
import os
import socket

import psycopg

from models.databases import database_at
from worker.runtime.wakeup import psycopg_dsn

log = logging.getLogger(__name__)

# The advisory lock's key: an arbitrary constant of the outbox's ("outbox beat" in ASCII).
BEAT_LOCK_KEY = 0x6F7574626F786274
HOLDER = """
SELECT a.application_name, a.client_addr::text, a.backend_start
FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.database = (
    SELECT oid FROM pg_database WHERE datname = current_database())
  AND (l.classid::bigint << 32) + l.objid::bigint = %s
"""


class BeatLock:
    """This beat's claim to be the outbox's only one, held until the process ends."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.connection: psycopg.Connection[tuple[object, ...]] | None = None

    def take(self) -> str | None:
        """Take the lock; the line saying who holds it when another beat does (None: taken,
        or nothing to take it on: SQLite, or no direct URL behind a transaction pooler)."""
        if self.url is None or not database_at(self.url).has_session_locks:
            return None
        name = f"outbox beat {socket.gethostname()}:{os.getpid()}"[:63]
        try:
            connection = psycopg.connect(
                psycopg_dsn(self.url), autocommit=True, application_name=name
            )
        except psycopg.Error as error:
            log.warning("beat: the one-beat check could not connect: %s", error)
            return None
        row = connection.execute("SELECT pg_try_advisory_lock(%s)", (BEAT_LOCK_KEY,)).fetchone()
        if row is not None and row[0]:
            self.connection = connection
            return None
        holder = connection.execute(HOLDER, (BEAT_LOCK_KEY,)).fetchone()
        connection.close()
        who = "another beat" if holder is None else f"{holder[0] or 'a process'} ({holder[1]})"
        since = "" if holder is None else f", running since {holder[2]:%Y-%m-%d %H:%M:%S %Z}"
        return (
            f"another beat is already running against this outbox: {who}{since}; run exactly "
            "one beat (a Kubernetes Deployment of one replica with the Recreate strategy)"
        )

    def release(self) -> None:
        """Let the lock go (the connection's end releases it)."""
        if self.connection is not None:
            self.connection.close()
            self.connection = None
