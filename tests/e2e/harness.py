"""The end-to-end harness: real Redis, sandbox, `celery` worker and beat processes, and the checks.

A `Stack` starts each process as a user would (`redis-server`, `python -m sandbox`,
`celery -A worker worker`, `celery -A worker beat`) in its own process group, with its output in a
log file, and can kill any of them with SIGKILL. `check_every_message` compares every outbox row
with the sandbox's ledger: the proof each scenario ends with.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from models import FINAL_STATUSES, NewMessage, SMSProject, enqueue_many
from sandbox.ledger import Entry
from sandbox.testing import SandboxAdmin
from tests.e2e.pooler import pgbouncer_argv
from worker.database import make_engine
from worker.ops.processes import Child, free_port, free_ports, wait_for

__all__ = ["free_port", "wait_for"]  # re-exported for the scenarios

VENV_BIN = Path(sys.executable).parent
CELERY = str(VENV_BIN / "celery")
OUTBOX_CELERY = str(VENV_BIN / "outbox-celery")  # worker/runtime/launch.py
TRACKING_ID = re.compile(r"[0-9a-f]{32}")
FINAL_SQL = "status IN ({})".format(", ".join(sorted(f"'{s.value}'" for s in FINAL_STATUSES)))

# Flower's Tasks page with each task's result (the dispatch summary), as
# docs/operations.md#flower configures it.
TASKS_COLUMNS = "name,uuid,state,result,received,runtime,worker"

CONCURRENCY = 2  # pool processes per worker: one worker process drives two batches at once

# Settings every scenario starts from: short backoff and lease so that faults heal in seconds.
BASE_SETTINGS = {
    "OUTBOX_BATCH_SIZE": "50",
    "OUTBOX_BACKOFF_BASE_SECONDS": "0.2",
    "OUTBOX_BACKOFF_MAX_SECONDS": "2",
    "OUTBOX_LEASE_SECONDS": "6",
    "WIRAYA_TIMEOUT_SECONDS": "2",
    "OUTBOX_POLL_INTERVAL_SECONDS": "1",
}


Service = Child  # one process of the stack: its own process group, its output in ``log``


@dataclass
class Stack:
    """Redis, the sandbox and the outbox's Celery processes for one test, on one fresh database."""

    database_url: str
    directory: Path
    # Picked together: two ports picked one after the other, before either server listens,
    # can be the same one.
    redis_port: int = 0
    sandbox_port: int = 0
    services: list[Service] = field(default_factory=list)
    redis: Service | None = None
    sandbox: Service | None = None
    workers: list[Service] = field(default_factory=list)
    beat: Service | None = None
    pgbouncer: Service | None = None
    flower: Service | None = None
    broker: str | None = None  # another broker than the stack's Redis, e.g. a RabbitMQ vhost
    settings: dict[str, str] = field(default_factory=lambda: dict(BASE_SETTINGS))
    _engine: Engine | None = None

    # -- processes ------------------------------------------------------------------------

    def __post_init__(self) -> None:
        if not (self.redis_port and self.sandbox_port):
            self.redis_port, self.sandbox_port = free_ports(2)

    @property
    def broker_url(self) -> str:
        """The stack's own Redis, unless the test chose another broker (``broker``)."""
        return self.broker or f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_port}"

    @property
    def admin(self) -> SandboxAdmin:
        return SandboxAdmin(self.sandbox_url)

    def _service(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> Service:
        log = self.directory / f"{name}.log"
        service = Service(name, argv, log, dict(env or os.environ), self.directory)
        self.services.append(service)
        return service

    def start_redis(self) -> Service:
        """A private redis-server on its own port, without persistence: a restart empties it."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed")
        if self.redis is None:
            argv = [binary, "--port", str(self.redis_port), "--bind", "127.0.0.1"]
            argv += ["--save", "", "--appendonly", "no"]
            self.redis = self._service("redis", argv)
        self.redis.start()
        wait_for(self._redis_answers, timeout=10, what="redis-server to answer")
        return self.redis

    def _redis_answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start_pgbouncer(self) -> str:
        """PgBouncer in transaction pooling mode in front of the stack's database; returns its URL.

        From then on the stack's engine and every process it starts reach the database
        through the pooler (``?pooler=transaction``), and beat listens for inserts on the
        direct URL (OUTBOX_LISTEN_URL). FileNotFoundError when pgbouncer is not installed.
        """
        port = free_port()
        argv = pgbouncer_argv(self.directory, port, self.database_url)
        self.pgbouncer = self._service("pgbouncer", argv)
        self.pgbouncer.start()
        self.pgbouncer.wait_for_log(r"process up")
        direct = self.database_url
        pooled = make_url(direct).set(port=port).update_query_dict({"pooler": "transaction"})
        self.database_url = pooled.render_as_string(hide_password=False)
        self.settings["OUTBOX_LISTEN_URL"] = direct
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        return self.database_url

    def start_sandbox(self, *flags: str, seed: int = 1) -> SandboxAdmin:
        """The sandbox as its own process (`python -m sandbox`), controlled over HTTP."""
        argv = [sys.executable, "-m", "sandbox", "--port", str(self.sandbox_port)]
        self.sandbox = self._service("sandbox", [*argv, "--seed", str(seed), *flags])
        self.sandbox.start()
        self.admin.wait_ready()
        return self.admin

    def start_flower(self, basic_auth: str) -> str:
        """`celery -A worker flower` as docs/deployment.md#plain-processes runs it
        (FLOWER_BASIC_AUTH, the Tasks page's columns with the results) on a free port; returns
        its URL once it answers."""
        port = free_port()
        argv = [CELERY, "-A", "worker", "flower", "--address=127.0.0.1", f"--port={port}"]
        env = self.worker_env(FLOWER_BASIC_AUTH=basic_auth, FLOWER_TASKS_COLUMNS=TASKS_COLUMNS)
        self.flower = self._service("flower", argv, env)
        self.flower.start()
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_get(f"{url}/healthcheck")[0] == 200, timeout=30, what="Flower")
        return url

    def worker_env(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "WIRAYA_"))}
        env.update(
            OUTBOX_DATABASE_URL=self.database_url,
            CELERY_BROKER_URL=self.broker_url,
            WIRAYA_BASE_URL=self.sandbox_url,
            PYTHONUNBUFFERED="1",
        )
        env.update(self.settings)
        env.update(overrides)
        # Batches keep the size a scenario gives (many requests, so that faults strike) unless
        # it names OUTBOX_BATCH_SIZE_MAX.
        if "OUTBOX_BATCH_SIZE" in env:
            env.setdefault("OUTBOX_BATCH_SIZE_MAX", env["OUTBOX_BATCH_SIZE"])
        return env

    def start_worker(
        self, concurrency: int = CONCURRENCY, command: str = OUTBOX_CELERY, **overrides: str
    ) -> Service:
        """`celery -A worker worker` as a user runs it; wait until it is ready."""
        number = len(self.workers) + 1
        argv = [command, "-A", "worker", "worker", "-l", "info", "--concurrency", str(concurrency)]
        argv += ["-n", f"w{number}@%h"]
        worker = self._service(f"worker{number}", argv, self.worker_env(**overrides))
        self.workers.append(worker)
        worker.start()
        worker.wait_for_log(r"ready\.")
        return worker

    def restart(self, service: Service, ready: str) -> None:
        """Start a stopped or killed service again and wait for ``ready`` in its new output."""
        service.start()
        service.wait_for_log(ready)

    def start_beat(self, command: str = OUTBOX_CELERY, **overrides: str) -> Service:
        """`celery -A worker beat` with the outbox's scheduler (the app's default)."""
        argv = [command, "-A", "worker", "beat", "-l", "info"]
        self.beat = self._service("beat", argv, self.worker_env(**overrides))
        self.beat.start()
        self.beat.wait_for_log(r"beat: Starting")
        return self.beat

    def start_outbox(self, workers: int = 1, **overrides: str) -> None:
        for _ in range(workers):
            self.start_worker(CONCURRENCY, **overrides)
        self.start_beat(**overrides)

    def stop_outbox(self) -> None:
        """Stop beat and every worker (warm shutdown)."""
        for service in [self.beat, *self.workers]:
            if service is not None:
                service.stop()

    def close(self) -> None:
        """Kill every process this stack started, whatever state the test left them in."""
        for service in reversed(self.services):
            service.kill()
        if self._engine is not None:
            self._engine.dispose()

    def outbox_logs(self) -> str:
        """Everything beat and the workers have logged."""
        return "".join(s.log.read_text() for s in [self.beat, *self.workers] if s is not None)

    def logs(self, lines: int = 40) -> str:
        return "\n\n".join(
            f"--- {service.name} ({service.log}) ---\n{service.tail(lines)}"
            for service in self.services
        )

    # -- the database ---------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.database_url)
        return self._engine

    def enqueue(self, messages: Iterable[NewMessage]) -> list[str]:
        """Insert through the producer API, in one transaction."""
        with Session(self.engine) as session, session.begin():
            return enqueue_many(session, messages)

    def insert_raw(self, rows: Iterable[tuple[str, str, str]]) -> None:
        """Insert (client_message_id, recipient, content JSON) by plain SQL, as any language can."""
        statement = text(
            "INSERT INTO outbox_messages (client_message_id, recipient, content) "
            "VALUES (:cmid, :recipient, CAST(:content AS jsonb))"
        )
        with self.engine.begin() as connection:
            for cmid, recipient, content in rows:
                connection.execute(
                    statement, {"cmid": cmid, "recipient": recipient, "content": content}
                )

    def count(self, where: str = "true") -> int:
        with self.engine.connect() as connection:
            return int(
                connection.scalar(text(f"SELECT count(*) FROM outbox_messages WHERE {where}"))
            )

    def final_count(self) -> int:
        return self.count(FINAL_SQL)

    def wait_all_final(self, total: int, timeout: float) -> None:
        """Wait until every one of ``total`` rows is accepted, failed or cancelled."""
        wait_for(
            lambda: self.final_count() >= total,
            timeout=timeout,
            what=f"all {total} rows to be final (now {self.final_count()})",
            every=0.25,
        )

    def rows(self) -> list[Row]:
        query = text(
            "SELECT client_message_id, status, attempts, tracking_id, last_error, "
            "created_at, accepted_at, updated_at FROM outbox_messages ORDER BY id"
        )
        with self.engine.connect() as connection:
            return [Row(*values) for values in connection.execute(query)]

    def gate(self) -> dict[str, Any]:
        with self.engine.connect() as connection:
            row = connection.execute(text("SELECT * FROM outbox_dispatch_gate")).mappings().first()
        return dict(row or {})


def http_get(url: str, *, auth: str | None = None) -> tuple[int, bytes]:
    """GET ``url`` (with basic auth ``user:password``); (status, body), (0, b"") if unreachable."""
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        body = error.read()
        error.close()
        return error.code, body
    except OSError:
        return 0, b""


def flower_dispatches(flower: str, auth: str) -> list[dict[str, Any]]:
    """The `outbox.dispatch` tasks Flower has seen, through its API."""
    status, body = http_get(f"{flower}/api/tasks?taskname=outbox.dispatch", auth=auth)
    return list(json.loads(body).values()) if status == 200 else []


def accepted_in_summaries(tasks: list[dict[str, Any]]) -> int:
    """Messages accepted, added up over the successful dispatches' summaries (their results)."""
    found = (re.search(r"'accepted': (\d+)", str(task.get("result"))) for task in tasks)
    return sum(int(match.group(1)) for match in found if match is not None)


@dataclass(frozen=True)
class Row:
    """What the checks read of one outbox row."""

    client_message_id: str
    status: str
    attempts: int
    tracking_id: str | None
    last_error: str | None
    created_at: datetime
    accepted_at: datetime | None
    updated_at: datetime


def project_messages(prefix: str, count: int, start: int = 0) -> list[NewMessage]:
    """``count`` valid messages to ordinary recipients (the sandbox accepts them first time)."""
    return [
        NewMessage.create(
            client_message_id=f"{prefix}-{number:06d}",
            recipient=ordinary_recipient(number),
            content=SMSProject(project_id=123, placeholders=["John", f"Order #{number}"]),
        )
        for number in range(start, start + count)
    ]


def ordinary_recipient(number: int) -> str:
    """A recipient whose last seven digits are none of the sandbox's test suffixes (0000001-4)."""
    return f"4670{1_000_000 + number % 8_000_000:07d}"


# -- the proof each scenario ends with ----------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """What must become of one message.

    ``receipts``: how many times the sandbox must have received it (0: never sent), or None
    when not fixed. ``resend_ok``: its outcome was unknown at least once (dropped answer,
    timeout, killed worker), so the sandbox may have received it more often than that.
    """

    status: str = "accepted"
    reason: str | None = None
    receipts: int | None = 1
    resend_ok: bool = False


ACCEPTED_ONCE = Expect()


@dataclass
class Verdict:
    """The result of checking every message: counts for the report, problems for the assert."""

    rows: int = 0
    accepted: int = 0
    failed: int = 0
    resent: int = 0  # messages the sandbox received more than once
    extra_receipts: int = 0
    problems: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.rows} rows: {self.accepted} accepted, {self.failed} failed; "
            f"{self.resent} resent ({self.extra_receipts} extra receipts)"
        )


def check_every_message(
    rows: list[Row],
    ledger: Mapping[str, Entry],
    expect: Callable[[str], Expect] = lambda _: ACCEPTED_ONCE,
) -> Verdict:
    """Check every row against the sandbox's ledger; return the verdict (problems listed).

    - every row is final, with the status expected of it;
    - accepted: it holds the tracking id the sandbox gave that clientMessageId (one id per
      message, none shared), and the sandbox received it for the last time before the worker
      recorded the answer: no resend after a clear answer;
    - failed: last_error states the expected reason, and the sandbox never accepted it;
    - the sandbox received each message as often as expected, and nothing the outbox lacks.
    """
    verdict = Verdict(rows=len(rows))
    seen_tracking: dict[str, str] = {}
    for row in rows:
        cmid = row.client_message_id
        wanted = expect(cmid)
        entry = ledger.get(cmid)
        problems = _row_problems(row, wanted, entry, seen_tracking)
        verdict.problems += [f"{cmid}: {problem}" for problem in problems]
        verdict.accepted += row.status == "accepted"
        verdict.failed += row.status == "failed"
        if entry is not None and entry.times_received > 1:
            verdict.resent += 1
            verdict.extra_receipts += entry.times_received - 1
    known = {row.client_message_id for row in rows}
    strangers = sorted(set(ledger) - known)
    if strangers:
        verdict.problems.append(f"the sandbox received messages not in the outbox: {strangers[:5]}")
    return verdict


def _row_problems(
    row: Row, wanted: Expect, entry: Entry | None, seen_tracking: dict[str, str]
) -> list[str]:
    problems = []
    if row.status != wanted.status:
        problems.append(f"status {row.status} ({row.last_error}), expected {wanted.status}")
    receipts = 0 if entry is None else entry.times_received
    expected = wanted.receipts
    resent_after_unknown = wanted.resend_ok and expected is not None and receipts > expected
    if expected is not None and receipts != expected and not resent_after_unknown:
        problems.append(f"received {receipts} times by the sandbox, expected {wanted.receipts}")
    if row.status == "accepted":
        problems += _accepted_problems(row, entry, seen_tracking)
    elif row.status == "failed":
        if wanted.reason is not None and wanted.reason not in (row.last_error or ""):
            problems.append(f"failed with {row.last_error!r}, expected {wanted.reason!r}")
        if entry is not None and entry.tracking_id is not None:
            problems.append("failed in the outbox, yet accepted by the sandbox")
        if entry is not None and entry.last_received > row.updated_at:
            problems.append("received again after it was recorded failed")
    return problems


# accepted_at is in the outbox's time (the database's clock, read every few seconds and advanced
# by a monotonic clock: it trails the host's by up to that read's round trip); the sandbox's
# receipts are in the host's. A resend after a clear answer comes a request later, not within this.
CLOCK_TOLERANCE = timedelta(milliseconds=250)


def _accepted_problems(row: Row, entry: Entry | None, seen_tracking: dict[str, str]) -> list[str]:
    problems = []
    tracking_id = row.tracking_id or ""
    if not TRACKING_ID.fullmatch(tracking_id):
        problems.append(f"accepted with tracking id {row.tracking_id!r}")
    if entry is None:
        return [*problems, "accepted, but the sandbox never received it"]
    if entry.tracking_id != row.tracking_id:
        problems.append(f"tracking id {row.tracking_id}, the sandbox gave {entry.tracking_id}")
    other = seen_tracking.setdefault(tracking_id, row.client_message_id)
    if other != row.client_message_id:
        problems.append(f"tracking id {tracking_id} also held by {other}")
    if row.accepted_at is None or entry.last_received > row.accepted_at + CLOCK_TOLERANCE:
        problems.append(
            f"received at {entry.last_received}, after it was recorded accepted at "
            f"{row.accepted_at}: resent after a clear answer"
        )
    return problems


def kill_a_worker_mid_batch(stack: Stack, prefix: str, total: int = 1_000) -> tuple[Verdict, int]:
    """The crash scenario: SIGKILL the worker while a batch's answer is on its way, restart it.

    The sandbox answers 400 ms after doing the work, so the kill can strike a batch the
    sandbox has accepted but whose answer the worker never read (outcome unknown). Only the
    batches in flight at the kill may be sent again, once their lease ends, under the same
    clientMessageId. Returns the verdict over every message and how many were in flight.
    """
    admin = stack.start_sandbox("--latency-ms", "100", "--slow-after-work-ms", "400")
    stack.enqueue(project_messages(prefix, total))
    stack.start_outbox()
    (worker,) = stack.workers

    def accepted_by_sandbox_not_yet_recorded() -> bool:
        # The ledger first, then the rows, then the kill at once: a batch the sandbox had
        # received and whose answer is not yet recorded is still awaiting it at the kill.
        if stack.count("status = 'accepted'") < 100:
            return False
        received = set(admin.ledger())
        sending = {row.client_message_id for row in stack.rows() if row.status == "sending"}
        return bool(sending & received)

    wait_for(accepted_by_sandbox_not_yet_recorded, timeout=30, what="a batch awaiting its answer")
    worker.kill()
    in_flight = {row.client_message_id for row in stack.rows() if row.status == "sending"}
    stack.restart(worker, r"ready\.")
    stack.wait_all_final(total, timeout=90)
    verdict = check_every_message(
        stack.rows(), admin.ledger(), lambda cmid: Expect(resend_ok=cmid in in_flight)
    )
    return verdict, len(in_flight)


def assert_recovered(verdict: Verdict, total: int) -> None:
    """What the crash scenario proves: every message accepted once in effect, and the kill
    struck a batch whose answer was on its way (a kill between batches would prove nothing)."""
    assert_verdict(verdict)
    assert verdict.accepted == total
    assert verdict.resent > 0, "the kill must strike a batch the sandbox had accepted"


def assert_verdict(verdict: Verdict) -> None:
    """Fail with the first problems found, if any."""
    if verdict.problems:
        shown = "\n  ".join(verdict.problems[:25])
        more = len(verdict.problems) - 25
        suffix = f"\n  ... and {more} more" if more > 0 else ""
        raise AssertionError(f"{len(verdict.problems)} problems ({verdict}):\n  {shown}{suffix}")
