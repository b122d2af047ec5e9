"""The worker's errors, one root for all of them.

    OutboxError                  anything the outbox itself refuses or cannot do
    ├── SettingsError            a setting is missing or invalid (names the variable)
    ├── OperatorError            an operator command cannot go on (one line, an exit code)
    └── DispatchAlarm            a batch met a request-level failure: a failed task in Flower

The producer's errors (`models.InvalidMessage`, `models.DuplicateMessage`) are ValueErrors of
the caller's input and live beside the producer API; what a call to Wiraya can come to is not an
exception at all but a result (`worker.wiraya.results`).
"""

from __future__ import annotations


class OutboxError(Exception):
    """The root of the worker's own errors."""


class DispatchAlarm(OutboxError, RuntimeError):
    """A batch met a request-level failure (outage, wrong key, 5xx): a failed task in Flower."""
