"""What the API does with a well-formed request: validate each message, ledger it, answer it.

A resend of an accepted clientMessageId gets its original tracking id; test recipients (see
`sandbox.recipients`) get their fixed answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sandbox.faults import Validation
from sandbox.ledger import Entry, Ledger, new_tracking_ids
from sandbox.recipients import REASONS, Behaviour, behaviour, may_be_test_recipient
from sandbox.stats import Stats
from sandbox.validation import InvalidRequest, client_message_id_of, message_error


def validate(
    communications: list[Any], mode: Validation, stats: Stats
) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """The valid (clientMessageId, recipient) pairs, and failed results for the invalid ones."""
    valid: list[tuple[str, str]] = []
    failed: dict[str, Any] = {}
    for index, item in enumerate(communications):
        client_message_id = item.get("clientMessageId") if type(item) is dict else None
        if type(client_message_id) is not str or not client_message_id:
            client_message_id = client_message_id_of(item, index)  # raises, with the reason
        error = message_error(item)
        if error is None:
            valid.append((client_message_id, item["recipient"]))
        elif mode is Validation.REQUEST:
            raise InvalidRequest(
                f"communications[{index}] (clientMessageId {client_message_id!r}): {error}"
            )
        else:
            failed[client_message_id] = _failure(error, transient=False)
    stats.add(messages=len(communications), invalid=len(failed))
    return valid, failed


def record(
    valid: list[tuple[str, str]],
    ledger: Ledger,
    stats: Stats,
    accepted: list[tuple[str, str, str]] | None = None,
    key: str = "",
) -> dict[str, Any]:
    """Receive the valid messages in the ledger (each noted with ``key``, the fingerprint of
    the key they came with) and decide each one's result; the messages accepted for the first
    time go to ``accepted`` as (clientMessageId, recipient, tracking id)."""
    now = datetime.now(UTC)
    fresh = new_tracking_ids(len(valid))
    results: dict[str, Any] = {}
    counts = dict.fromkeys(["duplicates", *(kind.value for kind in Behaviour)], 0)

    def answer_and_note(entry: Entry) -> None:
        known = entry.tracking_id is not None
        answer(entry)
        if accepted is not None and not known and entry.tracking_id is not None:
            accepted.append((entry.client_message_id, entry.recipient, entry.tracking_id))

    def answer(entry: Entry) -> None:
        tracking_id = entry.tracking_id
        if tracking_id is not None:
            counts["duplicates"] += 1
        else:
            if may_be_test_recipient(entry.recipient):  # the common case skips this
                kind = behaviour(entry.recipient, entry.times_received)
                if kind is not Behaviour.ACCEPT:
                    counts[kind.value] += 1
                    _test_recipient(entry, kind, results, fresh, now)
                    return
            tracking_id = entry.tracking_id = next(fresh)
            entry.accepted_at = now
        results[entry.client_message_id] = {
            "trackingId": tracking_id,
            "success": True,
            "isTransientError": False,
        }

    overlapping = ledger.receive(valid, now, answer_and_note, key)
    counts[Behaviour.ACCEPT.value] = len(valid) - sum(counts.values())
    counts["received_while_answering"] = overlapping
    stats.add(**counts)
    return results


def _test_recipient(
    entry: Entry, kind: Behaviour, results: dict[str, Any], fresh: Iterator[str], now: datetime
) -> None:
    """Answer a test recipient's message (see sandbox.recipients) other than by accepting it."""
    if kind is Behaviour.OMIT:  # accepted, yet left out of the results
        entry.tracking_id, entry.accepted_at = next(fresh), now
    else:
        transient = kind is Behaviour.TRANSIENT
        results[entry.client_message_id] = _failure(REASONS[kind], transient=transient)


def _failure(reason: str, *, transient: bool) -> dict[str, Any]:
    return {
        "trackingId": None,
        "success": False,
        "isTransientError": transient,
        "errorMessage": reason,
    }
