"""What each process may do in the outbox's tables: one duty at a time, each with its rights.

The one list behind both `outbox grants` (worker/ops/grants.py: the SQL that gives a role exactly
these rights) and the check every process makes at start (worker/ops/start_check.py: one query
naming the first right missing). Columns are taken from the tables' metadata where a duty's
columns are "all but": the producer's and the receiver's columns are named; the lifecycle
columns the worker and the operator write are every other column of outbox_messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from models.inserts import READ_BACK
from models.outbox import outbox_messages
from models.quotas import outbox_tenant_quotas
from models.reports import outbox_delivery_reports
from models.suppressions import outbox_recipient_pacing, outbox_suppressions
from worker.dispatch.gate.state import dispatch_gate, key_gates, refused_keys

Kind = Literal["TABLE", "SEQUENCE", "FUNCTION"]
MESSAGES = outbox_messages.name
# worker/runtime/housekeeping.py's table (runtime sits above this layer; a test checks the name).
HOUSEKEEPING = "outbox_housekeeping"
REPORTS = outbox_delivery_reports.name
MATCH_TRIGGER = "outbox_messages_match_reports"
SAME_MESSAGE = "outbox_message_is(text, text, jsonb)"  # migration 0012
SUPPRESSIONS = outbox_suppressions.name
PACING = outbox_recipient_pacing.name
QUOTAS = outbox_tenant_quotas.name

# Columns a producer sets (an `enqueue` or a plain-SQL INSERT); those it reads back are
# models.inserts.READ_BACK: the id, the idempotency key and every server default.
PRODUCER_SETS = (
    "client_message_id",
    "recipient",
    "content",
    "priority",
    "expires_at",
    "next_attempt_at",
    "tenant",
    "trace_context",
    "segments",
)
# What a claim writes (worker/dispatch/claim.py); the record writes every lifecycle column.
CLAIM_SETS = ("status", "locked_until", "claim_token", "attempts", "first_due_at", "updated_at")
# What `outbox retry` and `outbox cancel` write.
OPERATOR_SETS = (
    "status",
    "attempts",
    "next_attempt_at",
    "locked_until",
    "last_error",
    "updated_at",
    "first_due_at",
)
# The receiver's: each message's delivery status, moved by its reports.
REPORT_COLUMNS = ("delivery_status", "delivery_status_at")
# Never rewritten once inserted (what the message is, and when it was made).
FIXED_COLUMNS = ("id", "client_message_id", "recipient", "content", "created_at")


def _present(names: Iterable[str]) -> tuple[str, ...]:
    """The names among ``names`` that outbox_messages has, in its column order."""
    wanted = set(names)
    return tuple(column.name for column in outbox_messages.columns if column.name in wanted)


def producer_reads() -> tuple[str, ...]:
    """The columns `enqueue` reads back: the id, the key, and what the database defaults."""
    return tuple(column.name for column in READ_BACK)


def lifecycle_columns() -> tuple[str, ...]:
    """What the worker and the operator write: every column but the message and its reports."""
    kept = {*FIXED_COLUMNS, "priority", "expires_at", "tenant", "trace_context", *REPORT_COLUMNS}
    return tuple(column.name for column in outbox_messages.columns if column.name not in kept)


@dataclass(frozen=True)
class Right:
    """One privilege on a table (or on some of its columns), a sequence or a function."""

    privilege: str
    on: str
    columns: tuple[str, ...] = ()
    kind: Kind = "TABLE"

    def described(self, columns: Iterable[str] | None = None) -> str:
        """``UPDATE on outbox_messages(tracking_id)``, as a missing right is named."""
        named = tuple(self.columns if columns is None else columns)
        where = f"{self.on}({', '.join(named)})" if named else self.on
        return (
            f"{self.privilege} on {'' if self.kind == 'TABLE' else self.kind.lower() + ' '}{where}"
        )


@dataclass(frozen=True)
class TriggerRuns:
    """The record's trigger can run: SECURITY DEFINER (migration 0012), or the role itself may
    read and update the reports it matches. Granted by the migration, not by GRANT."""

    function: str = MATCH_TRIGGER


Need = Right | TriggerRuns


@dataclass(frozen=True)
class Duty:
    """Something a process does, and the rights it needs to do it."""

    name: str
    needs: tuple[Need, ...]


def _rights(privileges: str, on: str, columns: tuple[str, ...] = ()) -> tuple[Right, ...]:
    return tuple(Right(privilege, on, columns) for privilege in privileges.split())


def producer_duties() -> tuple[Duty, ...]:
    """Insert messages; read back the id and defaults of its own rows, never their contents."""
    return (
        Duty(
            "enqueue",
            (
                Right("INSERT", MESSAGES, _present(PRODUCER_SETS)),
                Right("SELECT", MESSAGES, producer_reads()),
                Right("USAGE", f"{MESSAGES}_id_seq", kind="SEQUENCE"),
                Right("EXECUTE", SAME_MESSAGE, kind="FUNCTION"),
            ),
        ),
    )


def worker_duties() -> tuple[Duty, ...]:
    """The worker: claim due rows, record their outcomes, keep the sending gate."""
    lifecycle = lifecycle_columns()
    return (
        Duty("claim", (Right("SELECT", MESSAGES), Right("UPDATE", MESSAGES, _present(CLAIM_SETS)))),
        Duty("record", (Right("UPDATE", MESSAGES, lifecycle), TriggerRuns())),
        Duty(
            "keep the gate",
            _rights("SELECT INSERT UPDATE", dispatch_gate.name)
            + _rights("SELECT INSERT UPDATE", refused_keys.name)
            + _rights("SELECT INSERT UPDATE", key_gates.name),
        ),
        # The sending policy: read the opt-outs (and add one from reports), book recipients.
        Duty(
            "apply the sending policy",
            _rights("SELECT INSERT", SUPPRESSIONS) + _rights("SELECT INSERT UPDATE", PACING),
        ),
        # The daily quotas: book each batch on its tenant's counter.
        Duty("count daily quotas", _rights("SELECT INSERT UPDATE", QUOTAS)),
    )


def beat_duties() -> tuple[Duty, ...]:
    """Beat (the worker's role): count due rows, run housekeeping, prune finished rows."""
    return (
        Duty("count due rows", (Right("SELECT", MESSAGES),)),
        Duty("run housekeeping", _rights("SELECT INSERT UPDATE", HOUSEKEEPING)),
        # The unmatched reports' prune locks what it deletes (FOR UPDATE SKIP LOCKED, so that it
        # passes over reports a record is matching): PostgreSQL asks UPDATE on some column for it.
        Duty(
            "prune",
            _rights("SELECT DELETE", MESSAGES)
            + _rights("SELECT DELETE", REPORTS)
            + _rights("DELETE", QUOTAS)
            + (Right("UPDATE", REPORTS, ("message_id",)),),
        ),
    )


def receiver_duties() -> tuple[Duty, ...]:
    """The receiver: store reports, match them to messages, move delivery statuses."""
    # trace_context: what the handling of a report links to (docs/tracing.md).
    found = _present(("id", "tracking_id", "accepted_at", "trace_context", *REPORT_COLUMNS))
    return (
        Duty(
            "store reports",
            (
                Right("SELECT", REPORTS),
                Right("INSERT", REPORTS),
                Right("USAGE", f"{REPORTS}_id_seq", kind="SEQUENCE"),
            ),
        ),
        Duty(
            "match reports",
            (
                Right("SELECT", MESSAGES, found),
                Right("UPDATE", MESSAGES, _present(REPORT_COLUMNS)),
                Right("UPDATE", REPORTS, ("message_id",)),
            ),
        ),
    )


def operator_duties() -> tuple[Duty, ...]:
    """The CLI and the metrics: read everything; retry, cancel, prune; resume the gate."""
    tables = role_tables()
    return (
        # The gate's read-out creates its row the first time, before any worker has run.
        Duty(
            "read",
            (*(Right("SELECT", table) for table in tables), Right("INSERT", dispatch_gate.name)),
        ),
        Duty("retry and cancel", (Right("UPDATE", MESSAGES, _present(OPERATOR_SETS)),)),
        Duty("prune", (Right("DELETE", MESSAGES), Right("DELETE", REPORTS))),
        Duty("manage opt-outs", _rights("INSERT UPDATE DELETE", SUPPRESSIONS)),
        Duty(
            "resume",
            _rights("UPDATE", dispatch_gate.name)
            + _rights("UPDATE", refused_keys.name)
            + _rights("UPDATE", key_gates.name),
        ),
    )


def metrics_duties() -> tuple[Duty, ...]:
    """`outbox metrics`: reads what the operator reads, changes nothing."""
    return operator_duties()[:1]


Role = Literal["producer", "worker", "receiver", "operator", "metrics"]
ROLES: tuple[Role, ...] = ("producer", "worker", "receiver", "operator", "metrics")


def role_duties(role: Role) -> tuple[Duty, ...]:
    """Every duty of the processes that run under ``role`` (beat runs as the worker)."""
    if role == "producer":
        return producer_duties()
    if role == "worker":
        return worker_duties() + beat_duties()
    if role == "receiver":
        return receiver_duties()
    if role == "metrics":
        return metrics_duties()
    return operator_duties()


def role_tables() -> tuple[str, ...]:
    """Every table of the outbox a role may be granted rights on."""
    return (
        MESSAGES,
        REPORTS,
        dispatch_gate.name,
        refused_keys.name,
        key_gates.name,
        HOUSEKEEPING,
        SUPPRESSIONS,
        PACING,
        QUOTAS,
    )
