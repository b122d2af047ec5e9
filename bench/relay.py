"""A bare relay on the outbox table, the reference a drain is measured against (bench_drain).

Each of four loops claims due rows (`FOR UPDATE SKIP LOCKED`), sends them as one
EnqueueCommunications request and marks the answered ones accepted with their tracking ids, so
four batches are in flight at once. A lease it never uses, no gate, no screening, no retries:
what a drain costs when it guarantees nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import psycopg
from psycopg.types.json import set_json_loads

LOOPS = 4
CLAIM = """
UPDATE outbox_messages SET status = 'sending', attempts = attempts + 1, updated_at = now(),
       locked_until = now() + interval '2 minutes'  -- the table wants a lease on sending rows
WHERE id IN (SELECT id FROM outbox_messages
             WHERE status = 'pending' AND next_attempt_at <= now()
             ORDER BY priority, next_attempt_at, id LIMIT %s FOR UPDATE SKIP LOCKED)
RETURNING id, client_message_id, recipient, content
"""
ACCEPT = """
UPDATE outbox_messages AS m SET status = 'accepted', tracking_id = v.tracking_id,
       accepted_at = now(), updated_at = now()
FROM unnest(%s::bigint[], %s::text[]) AS v(id, tracking_id)
WHERE m.id = v.id
"""


def request_body(rows: list[tuple[Any, ...]]) -> bytes:
    """The EnqueueCommunications body the worker sends: `$type` first in every content."""
    communications = [
        {"clientMessageId": cmid, "recipient": to, "content": {"$type": c["$type"], **c}}
        for _, cmid, to, c in rows
    ]
    return orjson.dumps({"communications": communications})


async def connect(dsn: str) -> psycopg.AsyncConnection[Any]:
    """One loop's connection: autocommit (each statement its own transaction), JSON by orjson."""
    connection = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    set_json_loads(orjson.loads, connection)
    return connection


async def relay_loop(
    connection: psycopg.AsyncConnection[Any], http: httpx.AsyncClient, url: str, batch: int
) -> int:
    """Claim, send and mark batch after batch until nothing is due; the messages accepted."""
    accepted = 0
    while True:
        rows = await (await connection.execute(CLAIM, (batch,))).fetchall()
        if not rows:
            return accepted
        answer = await http.post(url, content=request_body(rows))
        results = orjson.loads(answer.content)["results"]
        ids, tracking_ids = [], []
        for row_id, cmid, _, _ in rows:
            result = results.get(cmid)
            if result and result.get("success"):
                ids.append(row_id)
                tracking_ids.append(result["trackingId"])
        await connection.execute(ACCEPT, (ids, tracking_ids))
        accepted += len(ids)


async def relay(
    connections: list[psycopg.AsyncConnection[Any]], api: str, batch: int, api_key: str = "sandbox"
) -> int:
    """Drain every due row into the API at ``api``: one loop per connection, all at once."""
    headers = {"X-ApiKey": api_key, "Content-Type": "application/json; charset=utf-8"}
    limits = httpx.Limits(max_connections=len(connections))
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as http:
        url = api.rstrip("/") + "/api/EnqueueCommunications"
        loops = [relay_loop(connection, http, url, batch) for connection in connections]
        return sum(await asyncio.gather(*loops))
