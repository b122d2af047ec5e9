"""A 2xx answer's `results` read into one outcome per message sent, whatever the answer holds.

Nothing in an answer can make recording fail: every field is checked for its type, a tracking id
must be exactly 32 hex characters, a key or field given twice and one tracking id given to two
messages are refused, and each such message is `Unknown` (resent under the same
clientMessageId) with the reason. Reasons are cleaned by the result types themselves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from models.text import shown
from worker.wiraya.json_reader import is_object, kind, member, members
from worker.wiraya.matching import match_results
from worker.wiraya.results import (
    Accepted,
    Answered,
    MessageOutcome,
    Rejected,
    SendResult,
    ServerError,
    Transient,
    Unknown,
)

TRACKING_ID = re.compile(r"[0-9A-Fa-f]{32}")
REASON_FIELDS = ("errorMessage", "error", "message", "reason", "title", "detail")
MISSING = Unknown("missing from the API's results")


def read_results(status: int, payload: Any, sent_ids: Sequence[str]) -> SendResult:
    """The outcome of every id sent, from a decoded 2xx answer; a malformed one is a ServerError."""
    if not is_object(payload):
        return ServerError(
            f"HTTP {status} with {kind(payload)} instead of a results object", status
        )
    top, twice = members(payload)
    if any(name.lower() == "results" for name in twice):
        return ServerError(f"HTTP {status} giving results twice", status)
    results = member(top, "results")
    if not is_object(results):
        return ServerError(f"HTTP {status} without a results object ({kind(results)})", status)
    entries, repeated = members(results)
    match = match_results(entries.keys(), sent_ids)
    outcomes: dict[str, MessageOutcome] = {}
    tracking_ids: set[str] = set()
    accepted = 0
    for sent in sent_ids:
        key = match.keys.get(sent)
        if key is None:
            outcomes[sent] = _unmatched(sent, match.ambiguous.get(sent))
        elif key in repeated:
            outcomes[sent] = Unknown(f"the API's results give the key {shown(key)} twice")
        else:
            entry = entries[key]
            outcome = outcomes[sent] = _accepted_at_once(entry) or message_outcome(entry)
            if isinstance(outcome, Accepted):
                tracking_ids.add(outcome.tracking_id.lower())
                accepted += 1
    if len(tracking_ids) < accepted:
        _refuse_shared_tracking_ids(outcomes)
    return Answered(outcomes)


def message_outcome(entry: object) -> MessageOutcome:
    """One entry of `results` (a decoded object or a dict): unknown fields ignored, case too."""
    if is_object(entry):
        fields, twice = members(entry)
        if twice:
            names = ", ".join(shown(name) for name in sorted(twice))
            return Unknown(f"result giving {names} twice")
    elif isinstance(entry, Mapping):
        fields = dict(entry)
    else:
        return Unknown(f"unreadable result: {kind(entry)}")
    success = member(fields, "success")
    if success is True:
        return _accepted(member(fields, "trackingId"))
    if success is not False:
        return Unknown(f"result without a boolean success (success is {kind(success)})")
    transient = member(fields, "isTransientError")
    reason = _result_reason(fields, transient)
    if transient is False:
        return Rejected(reason)
    if transient is True:
        return Transient(reason)
    said = "absent" if transient is None else kind(transient)
    return Transient(f"{reason} (isTransientError {said}: taken as transient)")


def _accepted_at_once(entry: object) -> Accepted | None:
    """The common answer, read in a few steps: one success with a good tracking id, or None."""
    if type(entry) is not tuple:
        return None
    fields = dict(entry)
    tracking_id = fields.get("trackingId")
    if (
        len(fields) == len(entry)
        and fields.get("success") is True
        and type(tracking_id) is str
        and TRACKING_ID.fullmatch(tracking_id)
    ):
        return Accepted(tracking_id)
    return None


def _accepted(tracking_id: object) -> MessageOutcome:
    if type(tracking_id) is str and TRACKING_ID.fullmatch(tracking_id):
        return Accepted(tracking_id)
    if isinstance(tracking_id, str) and tracking_id:
        return Unknown(
            f"success with a tracking id that is not 32 hex characters: {shown(tracking_id)}"
        )
    return Unknown(f"success without a tracking id (trackingId is {kind(tracking_id)})")


def _unmatched(sent: str, shared_key: str | None) -> Unknown:
    if shared_key is None:
        return MISSING
    return Unknown(
        f"ambiguous result key {shown(shared_key)}: another message of this request "
        f"could own it as the server spells keys (camelCase); clientMessageId {shown(sent)}"
    )


def _result_reason(fields: Mapping[str, Any], transient: object) -> str:
    for name in REASON_FIELDS:
        value = member(fields, name)
        if isinstance(value, str) and value.strip():
            return value
    return f"the API answered success false, isTransientError {kind(transient)}"


def _refuse_shared_tracking_ids(outcomes: dict[str, MessageOutcome]) -> None:
    """Messages holding one tracking id between them become Unknown: whose it is, is not known."""
    holders: dict[str, list[str]] = {}
    for sent, outcome in outcomes.items():
        if isinstance(outcome, Accepted):
            holders.setdefault(outcome.tracking_id.lower(), []).append(sent)
    for tracking_id, sharing in holders.items():
        if len(sharing) > 1:
            shared = Unknown(f"tracking id {tracking_id} given to {len(sharing)} messages")
            outcomes.update(dict.fromkeys(sharing, shared))
