"""What operators read and do: one database snapshot for stats and metrics, and guarded changes.

The `outbox` CLI and the metrics endpoint both read a `Snapshot`; the CLI's retry, cancel and
prune go through the functions below. SQL stays in `worker.repository`; argument parsing and
printing stay in `worker.cli`. Failures an operator can act on raise `OperatorError`, whose
message is the one line the CLI prints.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from models import Status
from worker import repository as repo
from worker.database import make_engine
from worker.repository import Gate, QueueFigures, Selection
from worker.settings import Settings

TOP_REASONS = 5
PRUNE_CHUNK = 5_000


class OperatorError(RuntimeError):
    """Something the operator must fix or know; ``str()`` is one line, ``exit_code`` non-zero."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def operator_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings of the CLI and the metrics endpoint, which never call the API.

    The API's address and key are left out, so that a missing key or a remote URL does
    not stop `outbox stats`; every other setting is validated as the worker does.
    """
    environ = os.environ if environ is None else environ
    api = {"WIRAYA_BASE_URL", "WIRAYA_API_KEY", "WIRAYA_SANDBOX_HOSTS"}
    kept = {key: value for key, value in environ.items() if key not in api}
    return Settings.from_environ(kept, WIRAYA_BASE_URL="http://localhost")


def shown_url(url: str) -> str:
    """A database URL fit to print: the password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(an unreadable URL)"


def _reason(error: BaseException) -> str:
    """A driver's error as a short phrase, e.g. 'Connection refused'."""
    text = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
    text = text.rsplit(" failed: ", 1)[-1]
    return text.replace("FATAL:", "").strip() or type(error).__name__


@contextmanager
def open_outbox(url: str, *, must_exist: bool = True) -> Iterator[Engine]:
    """An engine on the outbox database; unreachable or unmigrated databases raise one line."""
    shown = shown_url(url)
    if must_exist:
        _check_sqlite_file(url, shown)
    try:
        engine = make_engine(url)
    except (ArgumentError, NoSuchModuleError) as error:
        raise OperatorError(f"OUTBOX_DATABASE_URL: cannot use {shown}: {error}", 2) from None
    try:
        if must_exist:
            try:
                has_table = inspect(engine).has_table("outbox_messages")
            except DBAPIError as error:
                raise OperatorError(
                    f"cannot reach the database at {shown}: {_reason(error)}"
                ) from None
            if not has_table:
                raise OperatorError(
                    f"the database at {shown} has no outbox table: run `outbox migrate`"
                )
        try:
            yield engine
        except DBAPIError as error:
            if error.connection_invalidated or "connect" in str(error.orig).lower():
                raise OperatorError(
                    f"cannot reach the database at {shown}: {_reason(error)}"
                ) from None
            raise OperatorError(f"database error at {shown}: {_reason(error)}") from None
    finally:
        engine.dispose()


def _check_sqlite_file(url: str, shown: str) -> None:
    """SQLite would create a missing file; refuse instead, naming it."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    if not Path(str(parsed.database)).exists():
        raise OperatorError(
            f"no database file at {shown}: set OUTBOX_DATABASE_URL, or run `outbox migrate`"
        )


# Reading ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateState:
    """The shared sending state, as operators read it."""

    paused: bool  # no worker sends before paused_until
    paused_until: datetime | None
    failures: int  # request-level failures in a row
    circuit_open: bool  # failures reached OUTBOX_CIRCUIT_FAILURES: one probe at a time
    refused_key: bool  # the API refused a key (401/403); that key sends no more
    reason: str | None
    spacing_seconds: float  # requests spaced out after a 429
    batch_limit: int | None  # smaller batches after a too-large answer

    @classmethod
    def of(cls, gate: Gate, *, now: datetime, circuit_failures: int) -> GateState:
        paused = gate.paused_until is not None and gate.paused_until > now
        return cls(
            paused=paused,
            paused_until=gate.paused_until if paused else None,
            failures=gate.failures,
            circuit_open=gate.failures >= circuit_failures,
            refused_key=gate.refused_key is not None,
            reason=gate.reason,
            spacing_seconds=gate.spacing.total_seconds(),
            batch_limit=gate.batch_limit,
        )

    def describe(self) -> str:
        """One line: 'sending', or why not and until when."""
        if self.refused_key:
            state = "STOPPED: the API refused the key (fix WIRAYA_API_KEY; workers resume)"
        elif self.paused and self.paused_until is not None:
            state = f"PAUSED until {self.paused_until:%Y-%m-%d %H:%M:%S} UTC"
        elif self.circuit_open:
            state = "circuit OPEN: probing with one message at a time"
        else:
            state = "running"
        extras = []
        if self.failures:
            extras.append(f"{self.failures} failed requests in a row")
        if self.spacing_seconds:
            extras.append(f"requests spaced {self.spacing_seconds:.2f}s apart after a 429")
        if self.batch_limit:
            extras.append(f"batches limited to {self.batch_limit}")
        if self.reason and (self.paused or self.refused_key or self.failures):
            extras.append(f"last: {self.reason}")
        return state + (f" ({'; '.join(extras)})" if extras else "")


@dataclass(frozen=True)
class Snapshot:
    """Everything `outbox stats` and the metrics endpoint show, read at ``taken_at``."""

    taken_at: datetime
    figures: QueueFigures
    gate: GateState
    failure_reasons: list[tuple[str, int]]

    @property
    def oldest_unfinished_age(self) -> timedelta | None:
        """How long the oldest pending or sending message has waited (None: none waits)."""
        oldest = self.figures.oldest_unfinished_at
        return None if oldest is None else max(timedelta(0), self.taken_at - oldest)

    def to_json(self) -> dict[str, Any]:
        """The snapshot as `outbox stats --json` prints it."""
        age = self.oldest_unfinished_age
        gate = asdict(self.gate)
        gate["paused_until"] = _iso(self.gate.paused_until)
        gate["state"] = self.gate.describe()
        return {
            "taken_at": _iso(self.taken_at),
            "by_status": self.figures.by_status,
            "oldest_pending_age_seconds": None if age is None else age.total_seconds(),
            "due_now": self.figures.due_now,
            "retrying": self.figures.retrying,
            "leases_in_flight": self.figures.leases_in_flight,
            "expired_leases": self.figures.expired_leases,
            "gate": gate,
            "top_failure_reasons": [
                {"reason": reason, "count": count} for reason, count in self.failure_reasons
            ],
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def take_snapshot(
    engine: Engine, *, now: datetime, circuit_failures: int, reasons: int = TOP_REASONS
) -> Snapshot:
    """Read the backlog, the gate and the commonest failure reasons in one transaction."""
    with engine.begin() as connection:
        figures = repo.queue_figures(connection, now=now)
        gate = repo.read_gate(connection)
        failure_reasons = repo.failure_reasons(connection, limit=reasons)
    return Snapshot(
        taken_at=now,
        figures=figures,
        gate=GateState.of(gate, now=now, circuit_failures=circuit_failures),
        failure_reasons=failure_reasons,
    )


def find_message(engine: Engine, client_message_id: str) -> dict[str, Any]:
    """One message's row; OperatorError when no message has that id."""
    with engine.begin() as connection:
        row = repo.find_message(connection, client_message_id)
    if row is None:
        raise OperatorError(f"no message with client_message_id {client_message_id!r}")
    return row


# Changing ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What a retry or cancel would change, shown to the operator before it is done."""

    matched: int
    too_old: int = 0  # of those, created more than OUTBOX_MAX_AGE_SECONDS ago


def check_ids(connection: Connection, selection: Selection, status: Status) -> None:
    """Named ids must exist and hold ``status``; else one line naming the first that does not."""
    ids = selection.client_message_ids
    if not ids:
        return
    unknown = repo.unknown_ids(connection, ids)
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise OperatorError(f"no message with client_message_id {unknown[0]!r}{more}")
    for client_message_id in ids:
        row = repo.find_message(connection, client_message_id)
        if row is not None and row["status"] != status:
            raise OperatorError(
                f"message {client_message_id!r} is {row['status']}, not {status.value}"
            )


def plan_retry(engine: Engine, selection: Selection, *, now: datetime, max_age: timedelta) -> Plan:
    """How many failed messages the selection matches, and how many of them are too old."""
    with engine.begin() as connection:
        check_ids(connection, selection, Status.FAILED)
        matched, too_old = repo.count_selected(
            connection,
            selection,
            status=Status.FAILED,
            time_column="updated_at",
            created_before=now - max_age,
        )
    return Plan(matched, too_old)


def retry(engine: Engine, selection: Selection, *, now: datetime, renew_age: bool) -> int:
    """Failed → pending, due now, with fresh attempts; returns how many rows moved."""
    with engine.begin() as connection:
        return repo.retry_failed(connection, selection, now=now, renew_age=renew_age)


def plan_cancel(engine: Engine, selection: Selection) -> Plan:
    """How many pending messages the selection matches."""
    with engine.begin() as connection:
        check_ids(connection, selection, Status.PENDING)
        matched, _ = repo.count_selected(
            connection, selection, status=Status.PENDING, time_column="created_at"
        )
    return Plan(matched)


def cancel(engine: Engine, selection: Selection, *, now: datetime) -> int:
    """Pending → cancelled; returns how many rows moved."""
    with engine.begin() as connection:
        return repo.cancel_pending(connection, selection, now=now)


def plan_prune(engine: Engine, *, status: Status, cutoff: datetime) -> Plan:
    """How many rows of a final status finished before ``cutoff``."""
    with engine.begin() as connection:
        return Plan(repo.count_finished(connection, status=status, cutoff=cutoff))


def prune(engine: Engine, *, status: Status, cutoff: datetime) -> int:
    """Delete them in chunks, one short transaction each; returns how many went."""
    deleted = 0
    while True:
        with engine.begin() as connection:
            count = repo.prune_finished(connection, status=status, cutoff=cutoff, chunk=PRUNE_CHUNK)
        deleted += count
        if count < PRUNE_CHUNK:
            return deleted


def resume(engine: Engine, *, now: datetime) -> None:
    """Clear every pause, failure count, refused key, spacing and batch limit."""
    with engine.begin() as connection:
        repo.reset_gate(connection, now=now)


# Migrating --------------------------------------------------------------------------------------

ALEMBIC_INI = "alembic.ini"


def alembic_ini() -> Path:
    """The project's alembic.ini: beside the source tree, else in the working directory."""
    for folder in (Path(__file__).resolve().parent.parent, Path.cwd()):
        if (folder / ALEMBIC_INI).is_file():
            return folder / ALEMBIC_INI
    raise OperatorError(f"cannot find {ALEMBIC_INI}: run `outbox migrate` from the project folder")


def migrate(url: str) -> str:
    """`alembic upgrade head` on ``url``; returns the revision the database is at."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    config = Config(str(alembic_ini()))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    _make_sqlite_folder(url)
    with open_outbox(url, must_exist=False) as engine:
        try:
            command.upgrade(config, "head")
        except DBAPIError as error:
            raise OperatorError(
                f"cannot reach the database at {shown_url(url)}: {_reason(error)}"
            ) from None
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision() or "(none)"


def _make_sqlite_folder(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(str(parsed.database)).parent.mkdir(parents=True, exist_ok=True)
