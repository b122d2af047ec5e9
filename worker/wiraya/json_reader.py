"""Reading an answer's JSON strictly, with every object's members kept in order, duplicates too.

A JSON object is decoded as a tuple of (name, value) pairs, so that a key given twice (which a
dict would silently merge) stays visible; arrays are lists. Decoding never raises anything but
`NotJson`: not UTF-8, not JSON, NaN or Infinity, numbers Python refuses, or nesting deeper than
the interpreter's recursion limit all say why.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeGuard

from worker.errors import NotJson

JsonObject = tuple[tuple[str, Any], ...]


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# object_pairs_hook=tuple keeps the C scanner's speed: no Python code runs per object.
_DECODER = json.JSONDecoder(object_pairs_hook=tuple, parse_constant=_refuse_constant)


def parse(body: bytes) -> Any:
    """The JSON value of `body` (UTF-8, a BOM allowed), objects as tuples of pairs."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise NotJson("not UTF-8") from None
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise NotJson("nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, NaN, an integer of thousands of digits
        raise NotJson(str(exc)) from None


def is_object(value: object) -> TypeGuard[JsonObject]:
    """Whether a decoded value is a JSON object."""
    return type(value) is tuple


def members(value: JsonObject) -> tuple[dict[str, Any], frozenset[str]]:
    """An object's members by name, and the names it gives more than once."""
    fields = dict(value)
    if len(fields) == len(value):
        return fields, frozenset()
    seen: set[str] = set()
    twice: set[str] = set()
    for name, _ in value:
        (twice if name in seen else seen).add(name)
    return fields, frozenset(twice)


def member(fields: Mapping[str, Any], name: str) -> Any:
    """fields[name], else the first member equal to it ignoring case (PascalCase), else None."""
    if name in fields:
        return fields[name]
    lowered = name.lower()
    return next((value for key, value in fields.items() if key.lower() == lowered), None)


def kind(value: object) -> str:
    """What a decoded value is, for a reason: "an object", "a string", "null", ..."""
    if is_object(value):
        return "an object"
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    names = {list: "an array", str: "a string", int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)
