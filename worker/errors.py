"""The worker's errors, one root for all of them.

    OutboxError                  anything the outbox itself refuses or cannot do
    ├── SettingsError            a setting is missing or invalid (names the variable); a ValueError
    ├── OperatorError            an operator command cannot go on (one line, an exit code)
    ├── MissingRight             the process's role lacks a right one of its duties needs
    ├── SchemaBehind             the database lacks a column this version reads: a migration
    │                            has not run
    ├── DispatchAlarm            a batch met a request-level failure: a failed task in Flower;
    │                            a RuntimeError
    ├── InputError               input from outside cannot be read (the message says where and
    │   │                        why); a ValueError
    │   ├── NotJson              an answer's body is not JSON the API client reads
    │   ├── BodyError            a report request's body is not reports as a whole
    │   ├── ReportError          one report of a request is malformed (names the field)
    │   └── GrantsError          a role or schema name `outbox grants` cannot use
    ├── LockNotTaken             a migration's catalogue change found its table locked on every
    │                            try
    └── ChildExited              a child process (demo, tests) ended while it should run; a
                                 RuntimeError

Where a caller caught a builtin before (``except ValueError`` around settings or JSON), the
class still is one. The producer's errors (`models.InvalidMessage`, `models.DuplicateMessage`)
are ValueErrors of the caller's input and live beside the producer API (`models.errors`); what a
call to Wiraya can come to is not an exception at all but a result (`worker.wiraya.results`).
"""

from __future__ import annotations


class OutboxError(Exception):
    """The root of the worker's own errors."""


class SettingsError(OutboxError, ValueError):
    """A setting is missing or invalid; the message names the variable and says why."""


class OperatorError(OutboxError):
    """Something the operator must fix or know; ``str()`` is one line, ``exit_code`` non-zero."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class MissingRight(OutboxError):
    """The process's role lacks a right one of its duties needs (the message says which)."""


class SchemaBehind(OutboxError):
    """The database lacks a column this version reads: a migration has not run."""


class DispatchAlarm(OutboxError, RuntimeError):
    """A batch met a request-level failure (outage, wrong key, 5xx): a failed task in Flower."""


class InputError(OutboxError, ValueError):
    """Input from outside the outbox cannot be read; the message says where and why."""


class NotJson(InputError):
    """The body is not JSON this client reads; the message says why."""


class BodyError(InputError):
    """The body as a whole cannot be read as reports; ``str()`` says why."""


class ReportError(InputError):
    """One report is malformed; ``str()`` names the field and says why."""


class GrantsError(InputError):
    """A role or schema name that cannot be used (one line, naming the option)."""


class LockNotTaken(OutboxError):
    """A catalogue change found its table locked on every try until GIVE_UP_AFTER."""


class ChildExited(OutboxError, RuntimeError):
    """A child process ended while it was expected to run; the message ends with its log."""
