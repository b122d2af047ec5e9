"""A pgqueuer consumer, the best a pgqueuer user would write for this job: each loop dequeues a
batch of jobs (one message each), sends the batch in one EnqueueCommunications request and
logs every job of it done in one statement. pgqueuer's own queue table and its log table, no
lease beyond pgqueuer's heartbeat, no screening, no gate, no outcome per message.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
import orjson
import psycopg
from pgqueuer.adapters.persistence.queries import Queries
from pgqueuer.domain.models import Job
from pgqueuer.domain.types import QueueManagerId
from pgqueuer.ports.repository import EntrypointExecutionParameter

ENTRYPOINT = "send"
LOOPS = 4
HEARTBEAT_TIMEOUT = timedelta(seconds=30)


async def install(dsn: str) -> None:
    """pgqueuer's tables, functions and triggers in the database at ``dsn``."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as connection:
        await Queries.from_psycopg_connection(connection).install()


async def enqueue_backlog(dsn: str, messages: int, chunk: int = 10_000) -> None:
    """``messages`` jobs, each one message as the outbox's bench backlog holds it."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as connection:
        queries = Queries.from_psycopg_connection(connection)
        for start in range(1, messages + 1, chunk):
            numbers = range(start, min(start + chunk, messages + 1))
            payloads: list[bytes | None] = [_payload(g) for g in numbers]
            count = len(payloads)
            await queries.enqueue(
                [ENTRYPOINT] * count, payloads, [0] * count, [None] * count, [None] * count
            )


def _payload(g: int) -> bytes:
    content = {"$type": "SMSProject", "projectId": 123, "placeholders": ["John", f"Order #{g}"]}
    recipient = f"4670{1_000_000 + g % 8_000_000:07d}"
    return orjson.dumps({"id": f"drain-{g:07d}", "to": recipient, "content": content})


def request_body(jobs: list[Job]) -> bytes:
    communications = []
    for job in jobs:
        message = orjson.loads(job.payload or b"{}")
        communications.append(
            {"clientMessageId": message["id"], "recipient": message["to"], **_content(message)}
        )
    return orjson.dumps({"communications": communications})


def _content(message: dict[str, Any]) -> dict[str, Any]:
    return {"content": message["content"]}


async def consume(queries: Queries, http: httpx.AsyncClient, url: str, batch: int) -> int:
    """Dequeue, send and log done batch after batch until the queue is empty; jobs done."""
    manager = QueueManagerId(uuid.uuid4())
    entrypoints = {ENTRYPOINT: EntrypointExecutionParameter(concurrency_limit=0)}
    done = 0
    while True:
        jobs = await queries.dequeue(batch, entrypoints, manager, None, HEARTBEAT_TIMEOUT)
        if not jobs:
            return done
        answer = await http.post(url, content=request_body(jobs))
        answer.raise_for_status()
        await queries.log_jobs([(job, "successful", None) for job in jobs])
        done += len(jobs)


async def connect(dsn: str) -> psycopg.AsyncConnection[Any]:
    """One consumer's connection (autocommit, as pgqueuer's psycopg driver requires)."""
    return await psycopg.AsyncConnection.connect(dsn, autocommit=True)


async def drain(
    connections: list[psycopg.AsyncConnection[Any]], api: str, batch: int, api_key: str = "sandbox"
) -> int:
    """Drain every queued job into the API at ``api``: one consumer per connection, at once."""
    headers = {"X-ApiKey": api_key, "Content-Type": "application/json; charset=utf-8"}
    limits = httpx.Limits(max_connections=len(connections))
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as http:
        url = api.rstrip("/") + "/api/EnqueueCommunications"
        loops = [consume(Queries.from_psycopg_connection(c), http, url, batch) for c in connections]
        return sum(await asyncio.gather(*loops))
