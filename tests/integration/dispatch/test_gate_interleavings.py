"""The gate's invariants (docs/sending-gate.md) under any interleaving of four workers.

A Hypothesis state machine drives four workers (two sending under WIRAYA_API_KEY, whose brakes
are the gate row's, two under a tenant's own key, with its own 429 pause, rate and slots) on
PostgreSQL and on SQLite: each reads the gate, asks for a permit and claims under it (the real
claim statement, guarded by the version it read), books a request slot, and later tells the gate
its answer; time moves in steps; an operator may resume. After every step the invariants are
checked against the database:

1. No request starts while a pause of its key (or one every key observes) is in force; a
   success never erases a pause that was set after its own request started.
2. While the circuit is open at most one probe is in flight, and a probe is granted as soon as
   the cadence allows.
3. Request slots are spaced by the rate in force, each key's by its own; a worker that will not
   wait holds no slot.
4. A refused key, and a 429 under a key, hold back that key only: the other key's worker still
   sends, and still obeys every other brake (the circuit, the failures' pause).
5. A failure is counted only when no request was answered after it started; a stale success
   is refused (1).
6. Every brake has an exit that needs nobody: a refused key is granted a retry as soon as its
   own cadence allows (while the circuit is open, as the circuit's probe); a batch size refused
   for its size brings the limit down, and a limit creeps back up only from the value read, so
   a stale worker never undoes a lower limit.
"""

from __future__ import annotations

import itertools
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Connection, Engine, delete, insert, update

from models import Status
from models.outbox import outbox_messages as outbox
from worker.api_keys import key_fingerprint
from worker.dispatch import gate as gates
from worker.dispatch.claim import claim, new_token
from worker.dispatch.gate.policy import Gate, Permit, ProbeKind
from worker.dispatch.gate.transitions import reset
from worker.dispatch.retry import RATE_DECREASE
from worker.settings import Settings

pytestmark = pytest.mark.timeout(600)

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SETTINGS = Settings.from_environ(
    {},
    WIRAYA_BASE_URL="http://localhost",
    WIRAYA_API_KEY="key-of-everyone",
    WIRAYA_API_KEYS="clinic=key-of-the-clinic",
    OUTBOX_RATE_LIMITS="clinic=4",  # the clinic's key's slots: 0.25 s apart at least
    OUTBOX_CIRCUIT_FAILURES=3,
    OUTBOX_PROBE_INTERVAL_SECONDS=5,
    OUTBOX_BATCH_SIZE=1,
    WIRAYA_TIMEOUT_SECONDS=2,
    OUTBOX_LEASE_SECONDS=30,
    OUTBOX_BACKOFF_BASE_SECONDS=1,
    OUTBOX_BACKOFF_MAX_SECONDS=8,
    OUTBOX_REFUSED_KEY_RETRY_SECONDS=12,
)
# The fingerprints the workers send under: WIRAYA_API_KEY's (the gate row's rate and pause) and
# the clinic's own key's (its row of outbox_key_gates).
DEFAULT_KEY = key_fingerprint(SETTINGS.api_key, SETTINGS.fingerprint_salt)
TENANT_KEY = key_fingerprint("key-of-the-clinic", SETTINGS.fingerprint_salt)
KEYS = (DEFAULT_KEY, DEFAULT_KEY, TENANT_KEY, TENANT_KEY)
LAST = len(KEYS) - 1
ROWS = 40
EPSILON = timedelta(microseconds=1)
EPSILON_RATE = 1e-9


@dataclass
class InFlight:
    """A request under way: when it started, on what permit, under which claim token."""

    started: datetime
    permit: Permit
    token: int
    row_ids: list[int]


@dataclass
class Worker:
    gate: Gate
    key: str  # the fingerprint it sends under
    view: gates.GateView | None = None
    request: InFlight | None = None


@dataclass
class Slot:
    at: datetime
    spacing: timedelta
    key: str


@dataclass(frozen=True)
class Pause:
    set_at: datetime
    until: datetime
    key: str | None  # the key a 429 paused; None: every key (a counted failure)


@dataclass
class Model:
    """What the test knows happened, to hold the database to."""

    now: datetime = T0
    pauses: list[Pause] = field(default_factory=list)
    slots: list[Slot] = field(default_factory=list)


class GateInterleavings(RuleBasedStateMachine):
    """Four workers and an operator against one gate (the test sets ``engine``)."""

    engine: Engine

    def __init__(self) -> None:
        super().__init__()
        self.connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self.workers = [
            Worker(Gate(SETTINGS, DEFAULT_KEY, random.Random(number)), key)
            for number, key in enumerate(KEYS)
        ]
        self.model = Model()

    def teardown(self) -> None:
        self.connection.close()

    @initialize()
    def fresh_outbox(self) -> None:
        c = self.connection
        c.execute(delete(outbox))
        c.execute(delete(gates.refused_keys))
        c.execute(delete(gates.key_gates))
        c.execute(delete(gates.dispatch_gate))
        rows = [
            {
                "client_message_id": f"m{n}",
                "recipient": "46705000000",
                "content": {"$type": "SMSFromAlpha", "sender": "W", "text": "hi"},
                "next_attempt_at": T0,
            }
            for n in range(ROWS)
        ]
        c.execute(insert(outbox), rows)
        gates.read_gate(c)

    # -- what workers do -------------------------------------------------------------

    @rule(number=st.integers(0, LAST))
    def read(self, number: int) -> None:
        self.read_for(self.workers[number])

    @precondition(lambda self: any(w.view and not w.request for w in self.workers))
    @rule(data=st.data())
    def start(self, data: st.DataObject) -> None:
        idle = [w for w in self.workers if w.view is not None and w.request is None]
        self.start_for(data.draw(st.sampled_from(idle)))

    @precondition(lambda self: any(w.request for w in self.workers))
    @rule(
        data=st.data(),
        answer=st.sampled_from(["answered", "failed", "rate_limited", "refused"]),
    )
    def finish(self, data: st.DataObject, answer: str) -> None:
        busy = [w for w in self.workers if w.request is not None]
        self.finish_for(data.draw(st.sampled_from(busy)), answer)

    @rule(number=st.integers(0, LAST), halves=st.integers(1, 8))
    def api_refuses_a_size(self, number: int, halves: int) -> None:
        """A batch of 2 x ``halves`` drew a too-large answer and both its halves were taken."""
        gate, c, now = self.workers[number].gate, self.connection, self.model.now
        gate.batches.too_large(c, size=2 * halves, now=now)
        gate.batches.too_large_for_its_size(c, halves=halves, now=now)
        state = gates.read_gate(c)
        assert state.batch_limit is not None and state.batch_limit <= halves  # invariant 6
        assert state.batch_proven is None or state.batch_proven <= halves

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 2.5, 6.0]))
    def time_passes(self, seconds: float) -> None:
        self.model.now += timedelta(seconds=seconds)

    @rule()
    def operator_resumes(self) -> None:
        reset(self.connection, now=self.model.now)
        self.model.pauses.clear()
        self.model.slots.clear()

    # -- one worker's steps ----------------------------------------------------------

    def read_for(self, worker: Worker) -> None:
        worker.view = self.view_of(worker)

    def view_of(self, worker: Worker, key: str | None = None) -> gates.GateView:
        """The gate as a worker reads it now, for its own key (or ``key``)."""
        return worker.gate.read(self.connection, key or worker.key)

    def start_for(self, worker: Worker) -> None:
        """Permit, claim under the version read, book a slot: the start of a request."""
        assert worker.view is not None and worker.request is None
        c, now, view = self.connection, self.model.now, worker.view
        self._check_probe_is_granted_when_due(worker)
        self._check_key_retry_is_granted_when_due(worker)
        permit = worker.gate.permit(c, view, now)
        if not permit.allowed or not worker.gate.pacing.slot_reachable(view, now):
            self._check_other_key_not_held_back(worker, permit)
            return
        token = new_token()
        rows = claim(
            c,
            limit=1,
            lease=SETTINGS.lease,
            now=now,
            version=view.version,
            token=token,
            account=view.key if view.own_account else None,
            account_version=view.key_version,
        )
        if not rows:
            worker.gate.give_back(c, permit)
            return
        cursor_before = self.view_of(worker).next_send_at
        wait = worker.gate.pacing.book_slot(c, view, now)
        if wait is None:
            # A worker that will not wait for its slot holds none (invariant 3).
            assert self.view_of(worker).next_send_at == cursor_before
            self._release(token, rows[0].id)
            worker.gate.give_back(c, permit)
            return
        rate = worker.gate.pacing.rate(view)
        if rate is not None:
            self.model.slots.append(Slot(now + wait, timedelta(seconds=1 / rate), worker.key))
        self._check_no_pause_in_force(worker, permit)
        worker.request = InFlight(now + wait, permit, token, [row.id for row in rows])

    def finish_for(self, worker: Worker, answer: str) -> None:
        """Tell the gate what the request's answer was, as sending does."""
        request = worker.request
        assert request is not None
        worker.request = None
        c = self.connection
        self.model.now = max(self.model.now, request.started)
        now = self.model.now
        before = gates.read_gate(c)
        if answer == "answered":
            worker.gate.answered(c, request.permit, started=request.started, size=1, now=now)
            self._check_pauses_set_since_survive(request.started)
            if before.batch_limit != request.permit.view.batch_limit:  # lowered since read
                assert gates.read_gate(c).batch_limit == before.batch_limit  # invariant 6
        elif answer == "failed":
            counted = worker.gate.failed(
                c, request.permit, started=request.started, reason="503", now=now
            )
            answered_since = (
                before.last_success_at is not None and before.last_success_at > request.started
            )
            after = gates.read_gate(c)
            assert counted is not answered_since  # invariant 5
            assert after.failures == before.failures + int(counted)
            if counted:
                self.model.pauses.append(Pause(now, after.api_paused_until or now, None))
        elif answer == "rate_limited":
            others = self._other_keys_pauses(worker)
            until = worker.gate.rate_limited(
                c, request.permit, retry_after=timedelta(seconds=3), reason="429", now=now
            )
            self.model.pauses.append(Pause(now, until, worker.key))
            self._check_rate_came_down(worker, request.permit)
            assert self._other_keys_pauses(worker) == others  # invariant 4: its key's alone
        else:
            worker.gate.refused(
                c, request.permit, status=401, reason="401", started=request.started, now=now
            )
        for row_id in request.row_ids:
            self._release(request.token, row_id)

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def one_probe_at_a_time(self) -> None:
        now = self.model.now
        probes: dict[str, int] = {}
        for worker in self.workers:
            request = worker.request
            if request is None or request.permit.probe is None:
                continue
            until = request.permit.probe_until
            if until is not None and until > now:  # past its lease its request had ended
                name = f"{request.permit.probe}:{worker.gate.fingerprint}"
                if request.permit.probe is ProbeKind.CIRCUIT:
                    name = "circuit"
                probes[name] = probes.get(name, 0) + 1
        assert all(count <= 1 for count in probes.values()), probes

    @invariant()
    def slots_are_spaced(self) -> None:
        for key in set(KEYS):  # each key's own slots: Wiraya limits each account
            slots = sorted((s for s in self.model.slots if s.key == key), key=lambda s: s.at)
            for earlier, later in itertools.pairwise(slots):
                assert later.at - earlier.at >= earlier.spacing - EPSILON, (earlier, later)

    # -- checks at the moment they apply ---------------------------------------------

    def _check_no_pause_in_force(self, worker: Worker, permit: Permit) -> None:
        state = self.view_of(worker)
        assert not state.paused(self.model.now), state  # invariant 1
        for pause in self.model.pauses:  # a tenant's key's 429 pause ends at its time alone
            if pause.key == worker.key != DEFAULT_KEY:
                assert not pause.set_at <= self.model.now < pause.until, (pause, state)
        if permit.probe is None:
            assert not state.circuit_open(SETTINGS.circuit_failures), state

    def _check_rate_came_down(self, worker: Worker, permit: Permit) -> None:
        # A 429 brings the key's rate below the one that drew it, whatever answers raised it since.
        drawn = permit.view.rate
        state = self.view_of(worker)
        assert state.rate is not None
        if drawn is not None:
            assert state.rate <= drawn * RATE_DECREASE + EPSILON_RATE, (drawn, state.rate)

    def _check_pauses_set_since_survive(self, started: datetime) -> None:
        for pause in self.model.pauses:
            if pause.set_at >= started and pause.until > self.model.now:
                for key in {pause.key} if pause.key else set(KEYS):
                    state = self.view_of(self.workers[KEYS.index(key)], key)
                    assert state.paused_until is not None and state.paused_until >= pause.until

    def _other_keys_pauses(self, worker: Worker) -> dict[str, datetime | None]:
        """Each other key's pause as its workers read it."""
        others = set(KEYS) - {worker.key}
        return {key: self.view_of(worker, key).paused_until for key in others}

    def _check_probe_is_granted_when_due(self, worker: Worker) -> None:
        view = worker.view
        fresh = self.view_of(worker)
        if view is None or not _same(fresh, view) or fresh.key_refused:
            return
        now = self.model.now
        open_ = fresh.circuit_open(SETTINGS.circuit_failures)
        due = fresh.next_probe_at is None or fresh.next_probe_at <= now
        free = fresh.probe_until is None or fresh.probe_until <= now
        if open_ and due and free and not fresh.paused(now):
            permit = worker.gate.permit(self.connection, fresh, now)
            assert permit.probe is ProbeKind.CIRCUIT  # invariant 2: on its cadence
            worker.gate.give_back(self.connection, permit)

    def _check_key_retry_is_granted_when_due(self, worker: Worker) -> None:
        view = worker.view
        fresh = self.view_of(worker)
        if view is None or not _same(fresh, view) or not fresh.key_refused:
            return
        now = self.model.now
        due = _free(fresh.key_next_probe_at, fresh.key_probe_until, now)
        if fresh.circuit_open(SETTINGS.circuit_failures):
            due = due and _free(fresh.next_probe_at, fresh.probe_until, now)
        if due and not fresh.paused(now) and worker.gate.pacing.slot_reachable(fresh, now):
            permit = worker.gate.permit(self.connection, fresh, now)
            assert permit.probe is not None, (fresh, permit)  # invariant 6: its own cadence
            worker.gate.give_back(self.connection, permit)

    def _check_other_key_not_held_back(self, worker: Worker, permit: Permit) -> None:
        fresh = self.view_of(worker)
        now = self.model.now
        held = (
            fresh.paused(now)
            or fresh.circuit_open(SETTINGS.circuit_failures)
            or fresh.key_refused
            or not worker.gate.pacing.slot_reachable(fresh, now)
        )
        if worker.view is not None and _same(fresh, worker.view) and not held:
            raise AssertionError(f"held back without a brake of its own: {permit}")

    def _release(self, token: int, row_id: int) -> None:
        self.connection.execute(
            update(outbox)
            .where(
                outbox.c.id == row_id,
                outbox.c.status == Status.SENDING,
                outbox.c.claim_token == token,
            )
            .values(status=Status.PENDING, locked_until=None, next_attempt_at=T0)
        )


def _same(fresh: gates.GateView, read: gates.GateView) -> bool:
    """Whether no brake of the gate nor of the key changed since ``read``."""
    return (fresh.version, fresh.key_version) == (read.version, read.key_version)


def _free(next_at: datetime | None, until: datetime | None, now: datetime) -> bool:
    return (next_at is None or next_at <= now) and (until is None or until <= now)


STATEFUL = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@contextmanager
def fresh_machine(engine: Engine) -> Iterator[GateInterleavings]:
    """The machine on a fresh outbox, for a test that takes its steps one by one."""
    GateInterleavings.engine = engine
    machine = GateInterleavings()
    try:
        machine.fresh_outbox()
        yield machine
    finally:
        machine.teardown()


def test_the_gate_holds_its_invariants_under_any_interleaving(engine: Engine) -> None:
    GateInterleavings.engine = engine
    run_state_machine_as_test(GateInterleavings, settings=STATEFUL)


def test_the_checks_catch_an_unconditional_success(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The machine's own steps, in the order that loses an update, against a gate whose success
    # note ignores what happened since its request started (the unconditional UPDATE of old):
    # the check must fail. With the guarded note the same steps pass.
    def lose_an_update() -> None:
        with fresh_machine(engine) as machine:
            one, two = machine.workers[0], machine.workers[1]
            machine.read_for(one)
            machine.start_for(one)
            machine.finish_for(one, "failed")  # counted: a short pause, the gate disturbed
            machine.time_passes(6.0)
            machine.read_for(one)
            machine.read_for(two)
            machine.start_for(one)
            machine.start_for(two)
            machine.finish_for(two, "rate_limited")  # a pause set while one's request is out
            machine.finish_for(one, "answered")  # must not erase it

    lose_an_update()  # guarded: passes
    from worker.dispatch.gate import transitions

    original = transitions.close_circuit_unless_failed_since

    def unconditional(connection: Connection, *, started: datetime, now: datetime) -> bool:
        return original(connection, started=datetime.max.replace(tzinfo=UTC), now=now)

    monkeypatch.setattr(transitions, "close_circuit_unless_failed_since", unconditional)
    with pytest.raises(AssertionError):
        lose_an_update()


def test_the_checks_catch_a_refused_key_left_waiting_on_an_open_circuit(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The machine's own steps to the deadlock of a single key: an outage opens the circuit and
    # the probe is refused. The key's retry must be granted on its cadence, as the circuit's
    # probe; a gate that leaves the refused key waiting for other keys' probes must fail.
    def refused_probe_then_retry() -> None:
        with fresh_machine(engine) as machine:
            one = machine.workers[0]
            for _ in range(SETTINGS.circuit_failures):
                machine.read_for(one)
                machine.start_for(one)
                machine.finish_for(one, "failed")
                machine.time_passes(6.0)
            machine.read_for(one)
            machine.start_for(one)
            assert one.request is not None and one.request.permit.probe is ProbeKind.CIRCUIT
            machine.finish_for(one, "refused")
            machine.time_passes(6.0)
            machine.time_passes(6.0)
            machine.read_for(one)
            machine.start_for(one)  # checks that the retry is granted
            assert one.request is not None

    refused_probe_then_retry()
    monkeypatch.setattr(
        Gate,
        "_key_retry",
        lambda self, connection, view, now: Permit(view, 0, wait_until=view.next_probe_at),
    )
    with pytest.raises(AssertionError):
        refused_probe_then_retry()


def test_the_checks_catch_a_429_that_pauses_every_key(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 429 under a tenant's own key must leave WIRAYA_API_KEY's workers sending: a gate that
    # notes it in the gate row (one pause for every key, as before keys had their own) must fail.
    def tenant_key_draws_a_429() -> None:
        with fresh_machine(engine) as machine:
            tenant = machine.workers[2]
            machine.read_for(tenant)
            machine.start_for(tenant)
            machine.finish_for(tenant, "rate_limited")

    tenant_key_draws_a_429()
    from worker.dispatch.gate import accounts, transitions

    def shared(connection: Connection, *, account: str, **note: Any) -> None:
        transitions.note_rate_limited(connection, **note)

    monkeypatch.setattr(accounts, "note_key_rate_limited", shared)
    with pytest.raises(AssertionError):
        tenant_key_draws_a_429()


def test_the_checks_catch_a_claim_blind_to_its_keys_pause(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker that read its tenant's key before another worker's 429 under it must claim
    # nothing: the claim is guarded by the key's version. A claim guarded by the gate's version
    # alone (a key's 429 leaves it) sends during the pause, and must fail.
    def stale_reading_of_a_paused_key() -> None:
        with fresh_machine(engine) as machine:
            stale, other = machine.workers[2], machine.workers[3]
            machine.read_for(stale)
            machine.read_for(other)
            machine.start_for(other)
            machine.finish_for(other, "rate_limited")
            machine.start_for(stale)  # on its reading from before the pause
            assert stale.request is None

    stale_reading_of_a_paused_key()
    module = sys.modules[__name__]
    guarded = module.claim

    def blind(connection: Connection, **arguments: Any) -> Any:
        return guarded(connection, **{**arguments, "account": None, "account_version": 0})

    monkeypatch.setattr(module, "claim", blind)
    with pytest.raises(AssertionError):
        stale_reading_of_a_paused_key()
