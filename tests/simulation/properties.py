"""The properties checked on every run: safety while it runs, liveness when it ends.

Safety (design.md §5a, 1-3, and principle 2), checked at every request:
- ``resent``: no clientMessageId is sent again after a clear answer (accepted, rejected) was
  recorded for it, unless an operator retried it since;
- ``twice``: no clientMessageId is in two requests in flight at once (one holder at a time);
- ``paused``: no request while a pause that was in force when its batch was claimed still is
  (the pause of the request's key: each key's 429s pause that key alone);
- ``probe``: while the circuit is open, at most one request in flight;
- ``rate``: requests that booked a slot are spaced by the rate in force (the higher of the
  rates at either request: a slot booked before a 429 keeps its spacing), each key's requests
  by its own key's rate (Wiraya limits each account).
Liveness (§5a, 6-8), checked at the end (``finish``):
- ``stalled``: every message that can be sent is accepted within the bound after the API's
  return, with no operator's resume after the faults;
- ``poison``: a message that fails on its own ends `failed`, with its reason, within
  OUTBOX_MAX_ATTEMPTS lone sends;
- ``innocent-failed``: a message that never failed on its own does not end `failed`;
- ``tracking``: one tracking id per message, the API's, never shared;
- ``too-large``: once the API's item limit has been met, batches come down to it: at most a
  few too-many-items answers a minute afterwards;
- ``alarm-stuck``: once the API took a message after the last fault, the operators' read-out
  shows no refused key and no open circuit (every alarm ends by itself).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select

from models.outbox import outbox_messages as outbox
from tests.simulation.api_model import ITEMS_ANSWER, ApiModel
from tests.simulation.clock import SimClock
from worker.api_keys import key_fingerprint
from worker.dispatch.gate.policy import Gate
from worker.dispatch.gate.state import GateView, read
from worker.wiraya.results import Communication

FINAL = {"accepted", "failed", "cancelled"}


@dataclass(frozen=True)
class Violation:
    kind: str
    at: float
    detail: str

    def __str__(self) -> str:
        return f"[{self.kind}] at {self.at:.3f}s: {self.detail}"


@dataclass
class Checker:
    """Watches one run through the world's hooks and judges it at its end."""

    engine: Engine
    api: ApiModel
    clock: SimClock
    fingerprint: str
    threshold: int
    configured_rate: float | None
    quiet: Callable[[], AbstractContextManager[None]]
    violations: list[Violation] = field(default_factory=list)
    known_clear: set[str] = field(default_factory=set)
    pending_clear: dict[str, set[str]] = field(default_factory=dict)
    pending_lone: dict[str, list[str]] = field(default_factory=dict)
    records_due: set[str] = field(default_factory=set)
    claimed_version: dict[str, tuple[int, int]] = field(default_factory=dict)  # gate's, key's
    open_requests: set[str] = field(default_factory=set)
    # Per key fingerprint: (start, rate in force) of each request that took a slot.
    slots: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    slot_owed: set[str] = field(default_factory=set)  # workers whose next request took a slot
    gate_of_keys: Gate | None = None  # the workers' side of the gate: each key's own brakes
    salt: str = ""  # the fingerprints' (worker.api_keys)

    def fail(self, kind: str, detail: str) -> None:
        self.violations.append(Violation(kind, self.clock.elapsed, detail))

    def gate(self, key: str | None = None) -> GateView:
        """The gate as a worker reads it for API key ``key`` (None: WIRAYA_API_KEY's)."""
        fingerprint = self.fingerprint if key is None else key_fingerprint(key, self.salt)
        with self.quiet(), self.engine.connect() as connection:
            if self.gate_of_keys is None:
                return read(connection, fingerprint)
            return self.gate_of_keys.read(connection, fingerprint)

    # -- hooks while the run goes on -------------------------------------------------------

    def on_claim(self, worker: str, version: int, account_version: int = 0) -> None:
        """Right after a claim statement: the versions (the gate's, its key's) it was claimed
        under."""
        self.claimed_version[worker] = (version, account_version)
        self.slot_owed.add(worker)

    def on_request(
        self, worker: str, batch: Sequence[Communication], elapsed: float, key: str | None = None
    ) -> None:
        self.settle()
        now = self.clock.now()
        ids = [c.client_message_id for c in batch]
        for cmid in ids:
            if cmid in self.known_clear:
                self.fail("resent", f"{worker} sent {cmid} after a clear answer was recorded")
            holders = sorted(w for w, held in self.api.holding.items() if cmid in held)
            if holders:
                self.fail("twice", f"{worker} sent {cmid} while {holders} had it in flight")
        view = self.gate(key)
        # The gate unchanged since the claim: a pause in force now was in force then.
        paused = view.paused_until
        unchanged = (view.version, view.key_version) == self.claimed_version.get(worker)
        if unchanged and paused is not None and paused > now:
            self.fail("paused", f"{worker} sent {len(ids)} during a pause until {paused:%T}")
        self.open_requests.discard(worker)
        if view.failures >= self.threshold:  # the circuit is open
            others = sorted(w for w in self.open_requests if w in self.api.in_flight)
            if others:
                self.fail("probe", f"{worker} sent while the circuit is open and {others} are")
            self.open_requests.add(worker)
        if worker in self.slot_owed:
            self.slot_owed.discard(worker)
            self._check_rate(worker, elapsed, view)

    def _check_rate(self, worker: str, elapsed: float, view: GateView) -> None:
        configured = self.configured_rate
        if self.gate_of_keys is not None:
            configured = self.gate_of_keys.pacing.configured_rate(view)
        rates = [rate for rate in (configured, view.rate) if rate]
        if not rates:
            return
        rate = min(rates)
        slots = self.slots.setdefault(view.key, [])
        if slots:
            # A slot booked before a 429 lowered the rate keeps the spacing it was booked at.
            last, then = slots[-1]
            spacing = 1 / max(rate, then)
            if elapsed - last < spacing * 0.999:
                gap = elapsed - last
                self.fail("rate", f"{worker}'s batch {gap:.3f}s after the last, at {rate:.2f}/s")
        slots.append((elapsed, rate))

    def on_answer(self, worker: str, clear: list[str], lone: str | None) -> None:
        """An answer reached ``worker``: clear answers, and a lone send while the API was well."""
        self.pending_clear.setdefault(worker, set()).update(clear)
        if lone is not None:
            self.pending_lone.setdefault(worker, []).append(lone)

    def on_record(self, worker: str) -> None:
        """A worker's record statement ran: judged at the next step of any actor (``settle``),
        once its cursor is read to the end and the statement committed."""
        self.records_due.add(worker)

    def settle(self) -> None:
        """Every record run since: its clear answers now written are known to the outbox (a
        row no longer `sending` under a claim was written; a stale worker's record was not)."""
        due, self.records_due = sorted(self.records_due), set()
        for worker in due:
            self._settle(worker)

    def _settle(self, worker: str) -> None:
        for cmid in self.pending_lone.pop(worker, []):
            self.api.ledger[cmid].lone_since_retry += 1
        waiting = self.pending_clear.pop(worker, set())
        if waiting:
            self.known_clear |= {cmid for cmid, held in self.statuses(waiting) if not held}

    def on_crash(self, worker: str) -> None:
        self.pending_clear.pop(worker, None)
        self.pending_lone.pop(worker, None)
        self.records_due.discard(worker)
        self.api.in_flight.pop(worker, None)
        self.api.holding.pop(worker, None)
        self.open_requests.discard(worker)
        self.slot_owed.discard(worker)

    def on_retry(self, retried: list[str]) -> None:
        """An operator's retry: those messages may be sent again, their lone sends anew."""
        self.settle()
        self.known_clear -= set(retried)
        for cmid in retried:
            entry = self.api.ledger.get(cmid)
            if entry is not None:
                entry.lone_since_retry = 0

    def statuses(self, ids: set[str]) -> Iterator[tuple[str, bool]]:
        """Each message and whether a claim holds it now."""
        held = (outbox.c.status == "sending") & outbox.c.claim_token.is_not(None)
        with self.quiet(), self.engine.connect() as connection:
            query = select(outbox.c.client_message_id, held)
            rows = connection.execute(query.where(outbox.c.client_message_id.in_(sorted(ids))))
            yield from ((str(cmid), bool(flag)) for cmid, flag in rows)


@dataclass(frozen=True)
class Ending:
    """Every message's end as the run left it (pruned rows as they were before)."""

    rows: dict[str, dict[str, Any]]
    arrivals: dict[str, float]  # clientMessageId -> when it was inserted (true time)


def finish(
    checker: Checker, ending: Ending, *, api_back: float, max_attempts: int, poison_within: float
) -> None:
    """The liveness and end-of-run safety properties; violations go to ``checker``."""
    owners: dict[str, str] = {}
    for cmid in sorted(ending.arrivals):
        row = ending.rows.get(cmid)
        if row is None:
            checker.fail("lost", f"{cmid} is gone from the table and was not pruned")
            continue
        tracking = row["tracking_id"]
        if tracking is not None:
            if tracking != checker.api.tracking_id(cmid) or tracking in owners:
                checker.fail("tracking", f"{cmid} holds {tracking}, not the API's one for it")
            owners[tracking] = cmid
        if row["status"] == "cancelled":
            continue
        since = f"(arrived {ending.arrivals[cmid]:.1f}s, API back {api_back:.1f}s)"
        if checker.api.poison_of(cmid) is None:
            _judge_innocent(checker, cmid, row, since)
        else:
            took = (row["updated_at"] - checker.clock.start).total_seconds() - ending.arrivals[cmid]
            _judge_poison(checker, cmid, row, since, took > poison_within, max_attempts)


def _judge_innocent(checker: Checker, cmid: str, row: dict[str, Any], since: str) -> None:
    """A message that never fails on its own ends accepted."""
    if row["status"] == "failed":
        checker.fail("innocent-failed", f"{cmid} failed without failing alone: {row['last_error']}")
    elif row["status"] != "accepted":
        checker.fail("stalled", f"{cmid} is {row['status']} {since}")


# A lone timeout with no other request to compare with may be a hang of the whole API: it is
# counted against the API, and the message then waits a probe interval before it is judged.
LONE_SENDS_TAKEN_FOR_AN_OUTAGE = 2


def _judge_poison(
    checker: Checker, cmid: str, row: dict[str, Any], since: str, late: bool, max_attempts: int
) -> None:
    """A message that fails on its own ends failed, with its reason, soon, on few lone sends."""
    kind = checker.api.poison_of(cmid)
    entry = checker.api.ledger.get(cmid)
    lone = entry.lone_since_retry if entry else 0
    if row["status"] != "failed":
        checker.fail("poison", f"{cmid} ({kind}) is {row['status']} {since}")
    elif not row["last_error"]:
        checker.fail("poison", f"{cmid} ({kind}) failed without a reason")
    elif late:
        checker.fail("poison", f"{cmid} ({kind}) failed later than the bound {since}")
    if lone > max_attempts + LONE_SENDS_TAKEN_FOR_AN_OUTAGE:
        checker.fail("poison", f"{cmid} ({kind}) was sent alone {lone} times")
    elif lone > max_attempts:
        checker.fail("lone-sends", f"{cmid} ({kind}) was sent alone {lone} times")


def check_limits(checker: Checker, *, settle: float, ended: float) -> None:
    """After the API's last item-limit change (and ``settle`` seconds to learn it), too-many-
    items answers stay rare: three, and one a minute more."""
    changes = [at for at, _ in checker.api.plan.item_limits]
    if not changes:
        return
    since = max(changes) + settle
    late = [r for r in checker.api.requests if r.start >= since and r.result == ITEMS_ANSWER]
    allowed = 3 + max(0.0, ended - since) / 60
    if len(late) > allowed:
        checker.fail(
            "too-large",
            f"{len(late)} too-many-items answers after {since:.0f}s (at most {allowed:.0f})",
        )


def check_alarms_cleared(checker: Checker, *, api_back: float) -> None:
    """Every alarm ends by itself: once the API took a message after the last fault, the
    operators' read-out shows no refused key and no open circuit (`outbox resume` never ran)."""
    if not any((e.accepted_at or -1.0) >= api_back for e in checker.api.ledger.values()):
        return
    with checker.quiet(), checker.engine.connect() as connection:
        view = read(connection, "")
    if view.refused_key_count:
        checker.fail("alarm-stuck", f"{view.refused_key_count} refused key(s) still shown")
    if view.circuit_open(checker.threshold):
        checker.fail("alarm-stuck", f"the circuit still shows open ({view.failures} failures)")
