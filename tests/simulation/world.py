"""One run's world: the database, the API model, and the actors that the scheduler interleaves.

Workers run the real `Dispatcher` (claim, screen, gate, send, record) with the simulated
clock, sleep, monotonic clock, random generator and API injected; beat runs the real
``Dispatcher.due_batches`` (the gate's ``dispatches_wanted``) to decide how many dispatches to
queue; operators run the real `worker.ops` commands (retry, cancel, prune, resume). A
statement hook hands the baton over before every statement, so the scheduler may interleave
workers between any two.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, event, insert, select

from models import Status
from models.databases import database_of
from models.outbox import outbox_messages as outbox
from tests.simulation.api_model import ApiModel, SimSender
from tests.simulation.clock import HostClock, SimClock
from tests.simulation.faults import Command, FaultPlan
from tests.simulation.properties import FINAL, Checker, Ending
from tests.simulation.scheduler import Actor, Crash, Scheduler
from worker import database
from worker.api_keys import key_fingerprint
from worker.clock import Clock
from worker.dispatch import claim as claims
from worker.dispatch.dispatcher import Dispatcher
from worker.dispatch.gate.policy import Gate
from worker.errors import OperatorError
from worker.ops import cancel, changes, retry
from worker.ops.selection import Selection
from worker.settings import Settings
from worker.wiraya.results import Communication, SendResult

CONTENT = {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": "Your code is 123456"}
BEAT_HOST = -1
FINISHED_CHECK_EVERY = 5.0  # seconds of true time between looks at whether every row is final


class CountsOnly:
    """Beat's dispatcher only counts due batches; it never sends."""

    def send(self, batch: Sequence[Communication], *, deadline: float | None = None) -> SendResult:
        raise RuntimeError("beat counts due batches; sending is the workers' job")


class Broker:
    """The broker's queue of wake-up calls, capped as `wake_dispatchers` caps it."""

    def __init__(self, scheduler: Scheduler, cap: int) -> None:
        self.scheduler, self.cap = scheduler, cap
        self.queued = 0
        self.waiting: list[Actor] = []

    def put(self, wanted: int = 1) -> int:
        count = max(0, min(wanted, self.cap - self.queued))
        self.queued += count
        for actor in self.waiting[:count]:
            self.scheduler.wake(actor)
        del self.waiting[:count]
        return count

    def take(self) -> None:
        actor = self.scheduler.current
        assert actor is not None
        while self.queued == 0:
            self.waiting.append(actor)
            self.scheduler.block()
        self.queued -= 1


class World:
    """The database, the API model, the checker and every actor of one seeded run."""

    def __init__(self, seed: int, plan: FaultPlan, engine: Engine) -> None:
        self.seed, self.plan, self.engine = seed, plan, engine
        url = engine.url.render_as_string(hide_password=False)
        self.settings = Settings.from_environ(
            {}, OUTBOX_DATABASE_URL=url, WIRAYA_BASE_URL="http://127.0.0.1:9", **plan.settings
        )
        self.clock = SimClock()
        crash_until = plan.fault_end
        self.scheduler = Scheduler(
            random.Random(f"turns-{seed}"),
            self.clock,
            crash_chance=lambda elapsed: plan.crash_chance if elapsed < crash_until else 0.0,
        )
        self.api = ApiModel(plan, self.scheduler, seed)
        self.hosts = {index: HostClock(self.clock) for index in [BEAT_HOST, *range(plan.workers)]}
        self.broker = Broker(self.scheduler, self.settings.max_parallel)
        # Reads and inserts of the world and its checker stand alone, as the dispatcher's do.
        self.autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        fingerprint = key_fingerprint(self.settings.api_key, self.settings.fingerprint_salt)
        self.checker = Checker(
            self.autocommit,
            self.api,
            self.clock,
            fingerprint,
            self.settings.circuit_failures,
            self.settings.configured_rate,
            self.quiet,
            # Each key's brakes as its workers read them (Wiraya limits each account).
            gate_of_keys=Gate(self.settings, fingerprint, random.Random(seed)),
            salt=self.settings.fingerprint_salt,
        )
        self.arrivals: dict[str, float] = {}
        self.pruned: dict[str, dict[str, Any]] = {}
        self.producing = True
        self.resumed_late = False
        self._last_finished_check = -FINISHED_CHECK_EVERY
        self.rng = random.Random(f"world-{seed}")

    # -- the statement hook ---------------------------------------------------------------

    @contextmanager
    def hooked(self) -> Iterator[None]:
        event.listen(self.engine, "before_cursor_execute", self._before)
        event.listen(self.engine, "after_cursor_execute", self._after)
        try:
            with self.database_time():
                yield
        finally:
            event.remove(self.engine, "before_cursor_execute", self._before)
            event.remove(self.engine, "after_cursor_execute", self._after)

    @contextmanager
    def quiet(self) -> Iterator[None]:
        """Statements run without handing the baton over (checks, operators)."""
        actor = self.scheduler.current
        if actor is not None:
            actor.quiet += 1
        try:
            yield
        finally:
            if actor is not None:
                actor.quiet -= 1

    def _before(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        actor = self.scheduler.current
        if actor is not None and not actor.quiet:
            self.checker.settle()  # records run before this statement have committed
        self.scheduler.pause(statement[:90])

    def _after(
        self, conn: Any, _cursor: Any, _statement: str, _p: Any, context: Any, *_: Any
    ) -> None:
        actor = self.scheduler.current
        compiled = getattr(context, "compiled", None)
        if actor is None or actor.quiet or compiled is None:
            return
        seam = database_of(conn)
        if compiled.statement is claims.CLAIMS[seam]:  # looked up now: a test may swap it
            parameters = context.compiled_parameters[0]
            versions = parameters["version"], parameters.get("account_version") or 0
            self.checker.on_claim(actor.name, *versions)
        elif compiled.statement is seam.record_statement():
            self.checker.on_record(actor.name)

    # -- actors ---------------------------------------------------------------------------

    def spawn_all(self) -> None:
        for index in range(self.plan.workers):
            self.scheduler.spawn(f"w{index}", self._worker_body(index), crashable=True)
        self.beat = self.scheduler.spawn("beat", self._beat)
        self.scheduler.spawn("producer", self._producer)
        self.scheduler.spawn("operator", self._operator)
        if self.plan.clock_steps:
            self.scheduler.spawn("ntp", self._clock_steps)

    def outbox_time(self, host: int) -> Clock:
        """The outbox's time as production wires it for a process on ``host``: the database's
        clock where the code has one (worker.database.outbox_clock; here the database's time is
        true time), else the host's wall clock (worker.clock.utc_now)."""
        wiring = getattr(database, "outbox_clock", None)
        if wiring is None:
            return self.hosts[host]
        original = database.utc_now
        database.utc_now = self.hosts[host]  # type: ignore[attr-defined]  # SQLite: the host's
        try:
            clock: Clock = wiring(self.engine, self.clock.monotonic)
        finally:
            database.utc_now = original  # type: ignore[attr-defined]
        return clock

    @contextmanager
    def database_time(self) -> Iterator[None]:
        """The database server's clock is true time while the run lasts."""
        original = getattr(database, "database_now", None)
        if original is not None:
            database.database_now = lambda engine: self.clock.now()  # type: ignore[attr-defined]
        try:
            yield
        finally:
            if original is not None:
                database.database_now = original  # type: ignore[attr-defined]

    def dispatcher(self, index: int, incarnation: int) -> Dispatcher:
        name = f"w{index}"
        return Dispatcher(
            self.settings,
            self.engine,
            SimSender(self.api, name, self.checker, self.settings.api_key),
            clock=self.outbox_time(index),
            rng=random.Random(f"{self.seed}-{name}-{incarnation}"),
            on_full_batch=self.broker.put,
            sleep=self.scheduler.sleep,
            monotonic=self.clock.monotonic,
            sender_for_key=lambda key: SimSender(self.api, name, self.checker, key),
        )

    def _worker_body(self, index: int) -> Any:
        def body() -> None:
            incarnation, name = 0, f"w{index}"
            while True:
                try:
                    if incarnation:
                        self.scheduler.sleep(self.rng.uniform(0.5, 3.0))  # the process restarts
                    dispatcher = self.dispatcher(index, incarnation)
                    while True:
                        self.broker.take()
                        try:
                            dispatcher.dispatch()
                        except Exception as error:  # Celery logs a task's error and goes on
                            self.checker.fail("raised", f"{name}: {type(error).__name__}: {error}")
                except Crash:
                    self.checker.on_crash(name)
                    incarnation += 1

        return body

    def _beat(self) -> None:
        counter = Dispatcher(
            self.settings,
            self.engine,
            CountsOnly(),
            clock=self.outbox_time(BEAT_HOST),
            rng=random.Random(f"{self.seed}-beat"),
            monotonic=self.clock.monotonic,
        )
        while True:
            due = counter.due_batches(counter.clock())
            if due:
                self.broker.put(due)
            self.scheduler.sleep(self.settings.poll_interval.total_seconds())

    def _producer(self) -> None:
        number = 0
        for arrival in self.plan.arrivals:
            self.scheduler.sleep(arrival.at - self.clock.elapsed)
            now = self.clock.now()
            rows = []
            for _ in range(arrival.count):
                cmid = f"m{number:03d}"
                self.api.numbers[cmid] = number
                self.arrivals[cmid] = self.clock.elapsed
                rows.append(
                    {
                        "client_message_id": cmid,
                        "recipient": f"4670{5_000_000 + number:07d}",
                        "content": CONTENT,
                        "priority": arrival.priority,
                        "tenant": self.plan.tenant_of(number),
                        "next_attempt_at": now,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
                number += 1
            with self.autocommit.connect() as conn:
                conn.execute(insert(outbox), rows)
            self.scheduler.interrupt(self.beat)  # beat hears inserts (NOTIFY, the newest id)
        self.producing = False

    def _operator(self) -> None:
        for at, command in self.plan.commands:
            self.scheduler.sleep(at - self.clock.elapsed)
            with self.quiet():
                self.scheduler.note(f"operator: outbox {command}")
                self._command(command)

    def _command(self, command: Command) -> None:
        now, settings = self.clock.now(), self.settings
        if command is Command.RETRY:
            plan = retry.plan_retry(self.engine, Selection(), now=now, max_age=settings.max_age)
            self.checker.on_retry([cmid for cmid, _ in self._rows_of(Status.FAILED)])
            retry.retry(self.engine, plan, now=now, renew_age=False)
        elif command is Command.CANCEL:
            pending = [cmid for cmid, _ in self._rows_of(Status.PENDING)]
            if pending:
                chosen = Selection(client_message_ids=(self.rng.choice(pending),))
                try:
                    plan = cancel.plan_cancel(self.engine, chosen, now=now)
                    cancel.cancel(self.engine, plan, now=now, include_sent=False)
                except OperatorError as error:
                    self.scheduler.note(f"operator: {error}")
        elif command is Command.PRUNE:
            cutoff = now - timedelta(seconds=10)
            for cmid, row in self._rows_of(Status.ACCEPTED):
                if row["accepted_at"] is not None and row["accepted_at"] < cutoff:
                    self.pruned[cmid] = row
            changes.prune(self.engine, status=Status.ACCEPTED, cutoff=cutoff)
        else:
            changes.resume(self.engine, now=now)

    def _clock_steps(self) -> None:
        for step in sorted(self.plan.clock_steps, key=lambda step: step.at):
            self.scheduler.sleep(step.at - self.clock.elapsed)
            self.scheduler.note(f"host of w{step.worker}: clock now {step.offset:+.0f}s off")
            self.hosts[step.worker].offset = step.offset

    # -- rows -----------------------------------------------------------------------------

    def _rows_of(self, status: Status | None = None) -> list[tuple[str, dict[str, Any]]]:
        query = select(outbox).order_by(outbox.c.id)
        if status is not None:
            query = query.where(outbox.c.status == status)
        with self.quiet(), self.autocommit.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [(str(row["client_message_id"]), dict(row)) for row in rows]

    def all_final(self) -> bool:
        """Whether every message has arrived and reached a final state (looked at every 5 s)."""
        if self.producing or self.clock.elapsed < self._last_finished_check + FINISHED_CHECK_EVERY:
            return False
        self._last_finished_check = self.clock.elapsed
        return all(row["status"] in FINAL for _, row in self._rows_of())

    def ending(self) -> Ending:
        rows = dict(self.pruned)
        rows.update(self._rows_of())
        return Ending(rows, dict(self.arrivals))
