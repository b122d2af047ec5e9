"""What the outbox needs a database to do its own way: one method per statement or quirk.

PostgreSQL (``postgresql.py``) and SQLite (``sqlite.py``) each implement ``Database``; the rest
of the code asks ``database_of(connection)`` for the one it runs on and never asks which one
it is. What both databases take alike stays with the code that uses it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import URL, ColumnElement, Connection, Engine, Table, TextClause
from sqlalchemy.dialects import postgresql, sqlite

if TYPE_CHECKING:
    from models.message import NewMessage

# An INSERT that takes ON CONFLICT clauses: both databases spell them alike.
Insert = postgresql.Insert | sqlite.Insert


@dataclass(frozen=True)
class ReportRow:
    """One delivery report as the receiver stores it (in the order the request locks them)."""

    tracking_id: str
    status: str
    done_at: datetime | None
    report: str  # the report as received, JSON


@dataclass
class ReportsWritten:
    """What a statement storing or matching reports did."""

    stored: Counter[str] = field(default_factory=Counter)  # new or newly matched, by status
    matched: int = 0  # of those, how many found their message
    unmatched_ids: list[int] = field(default_factory=list)  # the ids of the others
    updated: int = 0  # messages whose delivery status moved
    delivered_seconds: list[float] = field(default_factory=list)  # accepted -> DELIVERED


class Database(ABC):
    """Everything that differs between the databases the outbox runs on."""

    dialect: str  # SQLAlchemy's name for it, by which ``database_of`` finds it
    has_roles: bool  # whether the database grants rights to roles (start checks, grants)
    listens_for_inserts: bool  # whether beat can LISTEN for inserts instead of polling
    keeps_its_own_clock: bool  # whether the outbox's time is read from the database server
    has_session_locks: bool  # whether a session can hold an advisory lock (one beat at a time)
    # Whether a live table's columns change by short catalogue steps that wait for readers
    # (migrations' online DDL), rather than by the database's own ALTER TABLE.
    changes_columns_online: bool

    # -- connecting -----------------------------------------------------------------------

    @abstractmethod
    def make_engine(self, url: URL, *, pooled: bool, options: dict[str, Any]) -> Engine:
        """A new engine for the outbox database, tuned for it (``pooled``: behind a
        transaction pooler)."""

    @abstractmethod
    def table_columns(self, connection: Connection, tables: list[str]) -> dict[str, set[str]]:
        """The live columns of each of ``tables`` that exists (a start check: keep it cheap)."""

    @abstractmethod
    def supports_transaction_pooler(self, url: URL) -> bool:
        """Whether ``url`` can reach the database through a transaction pooler."""

    @abstractmethod
    def worker_processes(self, wanted: int) -> int:
        """How many pool processes may dispatch at once, ``wanted`` being the setting."""

    @abstractmethod
    def clock_now(self, connection: Connection) -> datetime:
        """The database server's clock (where ``keeps_its_own_clock``)."""

    @abstractmethod
    def database_file(self, url: URL) -> Path | None:
        """The file holding the database, None when a server holds it."""

    # -- the producer ---------------------------------------------------------------------

    @abstractmethod
    def insert(self, table: Any) -> Insert:
        """An INSERT into ``table`` (a Table or a mapped class) taking ON CONFLICT clauses."""

    @abstractmethod
    def same_message_columns(self, table: Table, message: NewMessage) -> list[Any]:
        """What the producer reads of the row holding ``message``'s id to tell whether it
        holds the same message (``models.inserts.same_message`` judges them)."""

    @abstractmethod
    def begin_before_savepoint(self, connection: Connection) -> None:
        """Make the transaction real before its first SAVEPOINT, so that a rollback undoes
        what the savepoint wrote."""

    @abstractmethod
    def in_autocommit(self, connection: Connection) -> bool:
        """Whether every statement on ``connection`` commits on its own."""

    @abstractmethod
    def reads_a_snapshot(self, connection: Connection) -> bool:
        """Whether the caller's transaction reads from a snapshot (REPEATABLE READ or
        SERIALIZABLE), where ON CONFLICT can meet a row it cannot see."""

    # -- dispatching ----------------------------------------------------------------------

    @abstractmethod
    def greatest(self, *values: Any) -> ColumnElement[Any]:
        """The greatest of ``values`` (NULL when any is NULL)."""

    @abstractmethod
    def least(self, *values: Any) -> ColumnElement[Any]:
        """The least of ``values`` (NULL when any is NULL)."""

    @abstractmethod
    def raw_text(self, column: Any) -> ColumnElement[Any]:
        """A text column as the claim returns it: unchecked, for the screen to judge."""

    @abstractmethod
    def raw_time(self, column: Any) -> ColumnElement[Any]:
        """A time column as the claim returns it: unchecked, for the screen to judge."""

    @abstractmethod
    def book_recipients(
        self, connection: Connection, recipients: Sequence[str], now: datetime, cutoff: datetime
    ) -> set[str]:
        """Set each recipient's booked send time (``outbox_recipient_pacing``) to ``now``
        where it is unset or at or before ``cutoff``, in one statement; the recipients
        booked. ``recipients`` come sorted: every worker locks them in one order."""

    @abstractmethod
    def one_of(self, column: Any, name: str) -> ColumnElement[bool]:
        """``column`` equal to one of the values of the list bound as ``name`` (the sending
        policy's look-ups of a batch's recipients and ids)."""

    @abstractmethod
    def record_statement(self) -> TextClause:
        """Write every claimed row's result in one statement, guarded: still sending, under
        this claim's token, so that a worker whose lease ended cannot overwrite the newer
        claim of another. Returns the ids written. Parameters: ``record_parameters``."""

    @abstractmethod
    def record_parameters(
        self, results: Sequence[dict[str, Any]], *, token: int, now: datetime
    ) -> dict[str, Any]:
        """The record statement's parameters: ``results`` (each with its row's ``id``, its
        times as datetimes) as JSON, the token and the time."""

    # -- delivery reports -----------------------------------------------------------------

    @abstractmethod
    def store_reports(
        self, connection: Connection, reports: Sequence[ReportRow], received_at: datetime
    ) -> ReportsWritten:
        """Store a request's reports once each (a repeat changes nothing), matched to their
        messages, and move each message's delivery status to its best report."""

    @abstractmethod
    def rematch_reports(
        self, connection: Connection, tracking_ids: Sequence[str], *, lock: bool
    ) -> ReportsWritten:
        """Match the still-unmatched reports of ``tracking_ids`` whose message exists by now,
        and apply them; ``lock``: first wait for the records in flight."""

    # -- operators ------------------------------------------------------------------------

    @abstractmethod
    def planner_estimate(self, connection: Connection, status: str) -> int | None:
        """How many rows of ``status`` the planner expects; None where it keeps no statistics."""

    @abstractmethod
    def contains_any_case(self, connection: Connection, column: Any, needle: str) -> Any:
        """``column`` contains ``needle``, letter case aside."""

    @abstractmethod
    def one_reading(self, engine: Engine) -> AbstractContextManager[Connection]:
        """A connection whose statements all see the same moment of the database."""

    @abstractmethod
    def migration_engine(self, url: URL) -> Engine | None:
        """An engine of its own for migrations; None when the outbox's engine serves."""

    @abstractmethod
    def migration_lock(
        self, engine: Engine, *, key: int, poll: timedelta
    ) -> AbstractContextManager[None]:
        """Wait until no other migration runs, and keep the next one waiting until the block
        ends (``key``: the lock's name; ``poll``: how often to look again)."""
