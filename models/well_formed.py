"""Stored content in its usual shapes, checked in plain Python: the dispatcher's fast path.

The pydantic models of models/content.py are the rules, and building one costs several
microseconds for every row a worker claims. ``api_form`` accepts only content those models
accept and gives the same API form; anything else, a bad row or a valid but unusual one (a
date not written as the producer writes it), gives None and goes through the models, which
name the field and the reason. tests/unit/models/test_well_formed.py holds the two to agreeing.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from models.content import INT32_MAX, PROJECT_TYPES, SENDER_MAX_LENGTH, SMSFromAlpha
from models.limits import MessageLimits
from models.text import text_problem

# The fields this module checks, by the API's names: a field added to a model must be added
# here too (tests/unit/models/test_well_formed.py compares them).
ALPHA_FIELDS = frozenset({"sender", "text"})
PROJECT_FIELDS = frozenset({"projectId", "placeholders", "nextAttemptUtc"})
_PROJECT_TYPES = frozenset(cls.type_name for cls in PROJECT_TYPES)
_PROJECT_KEYS = PROJECT_FIELDS | {"$type"}
# A date as the producer stores it: UTC to the second with a trailing Z (ASCII digits only).
_STORED_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


def api_form(content: dict[str, Any], limits: MessageLimits) -> dict[str, Any] | None:
    """The API form of well-formed content, as the models would give it; None when the models
    must decide. Raises InvalidMessage only as their ``check_limits`` would, for text over a
    limit in content they accept."""
    type_name = content.get("$type")
    if type(type_name) is not str:
        return None
    if type_name == SMSFromAlpha.type_name:
        return _from_alpha(content, limits)
    if type_name in _PROJECT_TYPES:
        return _project(content, type_name, limits)
    return None


def _from_alpha(content: dict[str, Any], limits: MessageLimits) -> dict[str, Any] | None:
    sender, text = content.get("sender"), content.get("text")
    if len(content) != len(ALPHA_FIELDS) + 1 or type(sender) is not str or type(text) is not str:
        return None  # a field missing, unknown or not text
    if len(sender) > SENDER_MAX_LENGTH or not sender.strip() or not text.strip():
        return None
    if text_problem(sender) is not None or text_problem(text) is not None:
        return None
    limits.check_text("content.text", text)
    return {"$type": SMSFromAlpha.type_name, "sender": sender, "text": text}


def _project(
    content: dict[str, Any], type_name: str, limits: MessageLimits
) -> dict[str, Any] | None:
    if not _PROJECT_KEYS.issuperset(content):
        return None
    project_id = content.get("projectId")
    if type(project_id) is not int or not 0 < project_id <= INT32_MAX:
        return None  # bool is no int here, as for StrictInt
    placeholders = content.get("placeholders", [])
    if type(placeholders) is not list:
        return None
    for value in placeholders:
        if type(value) is not str:
            return None
    # One search over all of them: joining makes no refused character, nor hides one.
    joined = "".join(placeholders)
    if text_problem(joined) is not None:
        return None
    values: list[str] = list(placeholders)
    api: dict[str, Any] = {"$type": type_name, "projectId": project_id, "placeholders": values}
    moment = content.get("nextAttemptUtc")
    if moment is not None:
        if type(moment) is not str or not _is_stored_date(moment):
            return None
        api["nextAttemptUtc"] = moment  # already the API's form: UTC, seconds, Z
    if len(joined) > min(limits.placeholder_chars, limits.placeholders_total_chars):
        limits.check_placeholders("content.placeholders", values)  # names which, and why
    return api


def _is_stored_date(value: str) -> bool:
    if _STORED_DATE.fullmatch(value) is None:
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:  # no such day or time (February 30th, 24:00): the models say why
        return False
    return True
