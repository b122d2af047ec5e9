"""The sandbox's admin endpoints under /_sandbox/: faults, key, ledger, stats and reset, as JSON.

| method and path                    | what it does                                             |
|------------------------------------|----------------------------------------------------------|
| GET  /_sandbox/health              | {"ok": true}, for waiting until the server is up         |
| GET  /_sandbox/faults              | the faults in force (durations as *_ms)                  |
| POST /_sandbox/faults              | change the given faults, keep the others; answers all    |
| PUT  /_sandbox/faults              | replace all faults (those not given go back to healthy)  |
| PUT  /_sandbox/api-key             | {"api_key": K or [K1, K2]}: accept only these (null: any) |
| GET  /_sandbox/ledger              | every received message: {"count", "accepted", "entries"} |
| GET  /_sandbox/ledger?client_message_id=X | one entry, or 404                                 |
| GET  /_sandbox/stats               | request and message counters, answers by status, rates   |
| POST /_sandbox/reset               | empty the ledger and stats, restart the dice; faults stay|
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from sandbox.api import EnqueueService
from sandbox.faults import Faults
from sandbox.replies import Reply, json_reply

ADMIN_PREFIX = "/_sandbox/"


def handle_admin(service: EnqueueService, method: str, target: str, body: bytes) -> Reply:
    """Answer one admin request; `target` is the request's path with its query."""
    url = urlsplit(target)
    query = {key: values[-1] for key, values in parse_qs(url.query).items()}
    route = (method, url.path.removeprefix(ADMIN_PREFIX).rstrip("/"))
    try:
        match route:
            case ("GET", "health"):
                return json_reply(200, {"ok": True})
            case ("GET", "faults"):
                return json_reply(200, service.faults.to_json())
            case ("POST" | "PUT", "faults"):
                return _change_faults(service, replace_all=method == "PUT", body=body)
            case ("PUT", "api-key"):
                return _change_api_key(service, body)
            case ("GET", "ledger"):
                return _ledger(service, query)
            case ("GET", "stats"):
                return json_reply(200, service.stats.to_json())
            case ("POST", "reset"):
                service.reset()
                return json_reply(200, {"reset": True})
    except ValueError as exc:
        return json_reply(400, {"error": str(exc)})
    return json_reply(404, {"error": f"no admin endpoint {method} {url.path}"})


def _change_faults(service: EnqueueService, *, replace_all: bool, body: bytes) -> Reply:
    changes = orjson.loads(body or b"{}")
    if not isinstance(changes, Mapping):
        raise ValueError("the body must be a JSON object of fault settings")
    base = Faults() if replace_all else service.faults
    service.set_faults(base.updated(changes))
    return json_reply(200, service.faults.to_json())


def _change_api_key(service: EnqueueService, body: bytes) -> Reply:
    change = orjson.loads(body or b"{}")
    key = change.get("api_key", "") if isinstance(change, Mapping) else ""
    keys = key if isinstance(key, list) else [key]
    if key is not None and (not keys or not all(isinstance(k, str) and k.strip() for k in keys)):
        raise ValueError(
            'api_key: the key to accept, a list of keys, or null to accept any: {"api_key": "..."}'
        )
    service.set_api_key(None if key is None else keys)
    return json_reply(200, {"api_key_required": service.api_key_required})


def _ledger(service: EnqueueService, query: Mapping[str, str]) -> Reply:
    client_message_id = query.get("client_message_id")
    if client_message_id is not None:
        entry = service.ledger.get(client_message_id)
        if entry is None:
            return json_reply(
                404, {"error": f"clientMessageId {client_message_id!r} never received"}
            )
        return json_reply(200, entry.to_json())
    entries = service.ledger.snapshot()
    payload: dict[str, Any] = {
        "count": len(entries),
        "accepted": sum(1 for entry in entries.values() if entry.tracking_id is not None),
        "entries": {key: entry.to_json() for key, entry in entries.items()},
    }
    return json_reply(200, payload)
