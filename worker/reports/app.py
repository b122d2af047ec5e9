"""The receiver's ASGI application (Starlette): ``POST /wiraya/callbacks`` and ``GET /health``.

A request is answered 2xx only once its reports are committed, so Wiraya resends what we did
not take. Answers:

| answer | when |
|---|---|
| 200 with counts | stored (new, repeated and refused reports counted; the refused ones logged) |
| 400 with the reason | the body is not JSON, not reports (an array or one), or none is valid |
| 401 | missing or wrong basic-auth credentials; the body is not read |
| 413 | the body exceeds OUTBOX_CALLBACK_MAX_BODY_BYTES |
| 503 | the database cannot be reached: nothing stored, Wiraya will resend |

Nothing here blocks the event loop: parsing and the database run in a worker thread, and the
counters are handed to a queue (`counters.CounterQueue`). How long a request may take to
arrive, and how many are served at once, is the server's part (`worker.reports.server`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from models.text import escaped
from worker.clock import Clock, utc_now
from worker.errors import BodyError
from worker.reports.counters import CounterQueue, Figures
from worker.reports.parsing import Batch, parse_body
from worker.reports.storage import Stored
from worker.reports.traces import store_traced
from worker.settings import ReceiverSettings

log = logging.getLogger(__name__)

CALLBACK_PATH = "/wiraya/callbacks"
HEALTH_PATH = "/health"
REALM = 'Basic realm="wiraya-callbacks", charset="UTF-8"'
REASONS_SHOWN = 10  # refused reports named in an answer and logged one by one
# Bodies parsed and stored at once: each costs about 20 times its size while it is (see
# bench/bench_receiver_limits.py); the others wait, holding only their bytes.
PROCESSED_AT_ONCE = 4


@dataclass(frozen=True)
class Receiver:
    """What a request needs: the database, the login, the body limit, counters and a clock."""

    engine: Engine
    credentials: bytes
    max_body_bytes: int
    counters: CounterQueue
    clock: Clock = utc_now
    processing: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(PROCESSED_AT_ONCE)
    )

    async def take_reports(self, request: Request) -> Response:
        if not authorized(request.headers.get("authorization"), self.credentials):
            self.counters.record(Figures(401))
            refusal = {"error": "missing or wrong credentials"}
            return _json(401, refusal, {"WWW-Authenticate": REALM})
        try:
            body = await _read_body(request, self.max_body_bytes)
        except ClientDisconnect:  # gone, or closed by the server for arriving too slowly
            return _json(400, {"error": "the request did not arrive whole"})
        if body is None:
            self.counters.record(Figures(413))
            refusal = {"error": f"the body exceeds {self.max_body_bytes:,} bytes"}
            return _json(413, refusal, {"Connection": "close"})
        try:
            async with self.processing:
                return await run_in_threadpool(self._receive, body)
        except DBAPIError as error:
            log.error("could not store reports: %s", str(error.orig or error).splitlines()[0])
            self.counters.record(Figures(503))
            return _json(503, {"error": "the database cannot be reached; nothing was stored"})

    async def health(self, request: Request) -> Response:
        try:
            await run_in_threadpool(self._ping)
        except DBAPIError:
            return _json(503, {"ok": False, "database": "down"})
        return _json(200, {"ok": True, "database": "up"})

    def _receive(self, body: bytes) -> Response:
        """Parse, store and answer (in a worker thread: the database calls block)."""
        received_at = self.clock()
        try:
            batch = parse_body(body, received_at=received_at)
        except BodyError as error:
            log.warning("refused a report request's body: %s", escaped(str(error)))
            self.counters.record(Figures(400))
            return _json(400, {"error": str(error)})
        _log_rejected(batch)
        if batch.rejected and not batch.reports:
            self.counters.record(Figures(400, rejected=len(batch.rejected)))
            reasons = [rejected.reason for rejected in batch.rejected[:REASONS_SHOWN]]
            refusal = {"error": "no report in the body is well-formed", "rejected": reasons}
            return _json(400, refusal)
        stored = store_traced(self.engine, batch.reports, received_at=received_at)
        self.counters.record(Figures(200, stored, len(batch.rejected)))
        log.info(
            "received %d reports: %d stored (%d matched, %d unmatched), %d repeats, %d refused",
            batch.received,
            sum(stored.stored.values()),
            stored.matched,
            stored.unmatched,
            stored.duplicates,
            len(batch.rejected),
        )
        return _json(200, _answer(batch, stored))

    def _ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))


def create_app(
    engine: Engine,
    settings: ReceiverSettings,
    *,
    counters_client: redis.Redis | None = None,
    clock: Clock = utc_now,
) -> Starlette:
    """The ASGI application of `outbox receiver`."""
    receiver = Receiver(
        engine,
        settings.callback_credentials,
        settings.callback_max_body_bytes,
        CounterQueue(counters_client),
        clock,
    )
    return Starlette(
        routes=[
            Route(CALLBACK_PATH, receiver.take_reports, methods=["POST"]),
            Route(HEALTH_PATH, receiver.health, methods=["GET"]),
        ]
    )


def authorized(header: str | None, expected: bytes) -> bool:
    """Whether an Authorization header carries exactly ``user:password`` (constant time)."""
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        given = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(given, expected)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(batch: Batch, stored: Stored) -> dict[str, Any]:
    return {
        "received": batch.received,
        "stored": sum(stored.stored.values()),
        "repeats": stored.duplicates,
        "matched": stored.matched,
        "unmatched": stored.unmatched,
        "rejected": len(batch.rejected),
        "reasons": [rejected.reason for rejected in batch.rejected[:REASONS_SHOWN]],
    }


def _log_rejected(batch: Batch) -> None:
    for rejected in batch.rejected[:REASONS_SHOWN]:
        log.warning("refused a report: %s: %s", escaped(rejected.reason), rejected.excerpt)
    if len(batch.rejected) > REASONS_SHOWN:
        log.warning("... and %d more refused reports", len(batch.rejected) - REASONS_SHOWN)


def _json(status: int, payload: object, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), status, headers, media_type="application/json")
