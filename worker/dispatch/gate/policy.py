"""The gate's policy: what a worker may send now, and what each answer changes for everyone.

The dispatcher asks `Gate.permit` before a claim ("may I send, how much?") and tells the gate
each request's answer (`answered`, `rate_limited`, `refused`, `failed`; `batches.too_large`). Every
write goes through `worker.dispatch.gate.transitions`, each a guarded statement.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import Connection

from worker.dispatch.gate import accounts
from worker.dispatch.gate import transitions as t
from worker.dispatch.gate.batches import Batches
from worker.dispatch.gate.names import KeyNames
from worker.dispatch.gate.pacing import CLAIM_ALLOWANCE, MAX_SLOT_WAIT, SLOT_TOO_FAR
from worker.dispatch.gate.state import GateView, key_still_refused, read
from worker.dispatch.retry import backoff
from worker.settings import Settings

# Evidence that the API answers is written at most this often per worker while all is well.
ANSWER_NOTE_INTERVAL = timedelta(seconds=1)
# A probe's lease outlasts its request by this much (the request ends by its deadline, cut to
# the lease less the record's margin): the wait for its request slot, the work between its claim
# and its request, and a second to record.
PROBE_MARGIN = MAX_SLOT_WAIT + CLAIM_ALLOWANCE + timedelta(seconds=1)


class ProbeKind(StrEnum):
    """Why a dispatch may send one message only."""

    CIRCUIT = "circuit"  # the circuit is open: does the API answer again?
    KEY = "key"  # this worker's key was refused: does the API take it again?


@dataclass(frozen=True)
class Permit:
    """What the gate allows one dispatch now: a batch size (0: nothing), and on what reading."""

    view: GateView
    size: int
    probe: ProbeKind | None = None
    probe_until: datetime | None = None
    wait_until: datetime | None = None
    reason: str | None = None

    @property
    def allowed(self) -> bool:
        return self.size > 0


class Gate:
    """One worker's side of the shared gate: its settings, its key, its questions and answers."""

    def __init__(self, settings: Settings, fingerprint: str, rng: random.Random) -> None:
        self.settings = settings
        self.fingerprint = fingerprint
        self.rng = rng
        self.pacing = accounts.pacing_of(settings, fingerprint)
        self.names = KeyNames(settings, fingerprint)  # its keys' tenants, for the operators
        self.batches = Batches(settings, rng)

    def read(self, connection: Connection, key: str | None = None) -> GateView:
        """The gate read for a key (None: WIRAYA_API_KEY's; any other has brakes of its own)."""
        self.names.write_once(connection)  # the process's first reading names its keys' tenants
        key = key or self.fingerprint
        return read(connection, key, own_account=key != self.fingerprint)

    def held_accounts(self, connection: Connection, now: datetime) -> set[str]:
        """The keys their own brakes hold now (`worker.dispatch.gate.accounts`)."""
        return accounts.held_accounts(connection, self.pacing, self.fingerprint, now)

    def _key(self, permit: Permit) -> str:
        return permit.view.key or self.fingerprint  # the key the permit's batch goes out under

    # -- may I send, how much -------------------------------------------------------------

    def permit(self, connection: Connection, view: GateView, now: datetime) -> Permit:
        """A batch size, a probe, or a wait; probes are taken here (one worker at a time)."""
        threshold = self.settings.circuit_failures
        if view.paused(now):
            return Permit(view, 0, wait_until=view.paused_until, reason=view.reason)
        if not self.pacing.slot_reachable(view, now):
            return Permit(view, 0, wait_until=view.next_send_at, reason=SLOT_TOO_FAR)
        if view.key_refused:
            return self._key_retry(connection, view, now)
        if view.circuit_open(threshold):
            return self._circuit_probe(connection, view, now)
        return Permit(view, self.batch_size(view))

    def dispatches_wanted(self, view: GateView, now: datetime) -> int:
        """How many dispatches the gate lets start now: none while held, one to probe."""
        threshold = self.settings.circuit_failures
        if view.paused(now) or not self.pacing.slot_reachable(view, now):
            return 0
        # Beat's key may be one the workers no longer hold: once the API answered since it was
        # refused (a replaced key), its refusal holds back no dispatch.
        key_holds = view.key_refused and not view.key_answered_since_refusal()
        if key_holds and not _free(view.key_next_probe_at, view.key_probe_until, now):
            return 0
        if key_holds and not view.circuit_open(threshold):
            return 1
        if view.circuit_open(threshold):
            return int(_free(view.next_probe_at, view.probe_until, now))
        return self.settings.max_parallel

    def held_after_wait(self, view: GateView, permit: Permit, now: datetime) -> str | None:
        """Why a permit no longer holds after waiting for its slot (None: it still does)."""
        held = view.paused(now) or (view.key_refused and permit.probe is None)
        if not held and permit.probe is None:
            held = view.circuit_open(self.settings.circuit_failures)
        return view.reason or "sending was paused while waiting for a slot" if held else None

    def batch_size(self, view: GateView) -> int:
        """The batch size in force (`worker.dispatch.gate.batches`)."""
        return self.batches.size(view)

    def _circuit_probe(self, connection: Connection, view: GateView, now: datetime) -> Permit:
        until = now + self.settings.wiraya_timeout + PROBE_MARGIN
        threshold = self.settings.circuit_failures
        if t.take_probe_if_free(  # a key's own 429 pause is its claim's guard, not the probe's
            connection, now=now, until=until, threshold=threshold, own_key=view.own_account
        ):
            return Permit(view, self.batch_size(view), ProbeKind.CIRCUIT, until)
        later = [moment for moment in (view.next_probe_at, view.probe_until) if moment]
        return Permit(view, 0, wait_until=max(later, default=None), reason=view.reason)

    def _key_retry(self, connection: Connection, view: GateView, now: datetime) -> Permit:
        """A refused key tries one message on its own slow cadence. While the circuit is open
        that message is the circuit's probe as well (one probe in flight for every key), so
        its answer closes the circuit: a single-key outbox never waits for an operator."""
        if not _free(view.key_next_probe_at, view.key_probe_until, now):
            later = [moment for moment in (view.key_next_probe_at, view.key_probe_until) if moment]
            return Permit(view, 0, wait_until=max(later, default=None), reason=view.key_reason)
        if view.circuit_open(self.settings.circuit_failures):
            return self._circuit_probe(connection, view, now)
        return self._key_probe(connection, view, now)

    def _key_probe(self, connection: Connection, view: GateView, now: datetime) -> Permit:
        until = now + self.settings.wiraya_timeout + PROBE_MARGIN
        key = view.key or self.fingerprint
        if t.take_key_probe_if_free(connection, fingerprint=key, now=now, until=until):
            return Permit(view, self.batch_size(view), ProbeKind.KEY, until)
        if not key_still_refused(connection, key):
            # Another worker's request cleared the key after this view was read.
            return Permit(view, self.batch_size(view))
        later = [moment for moment in (view.key_next_probe_at, view.key_probe_until) if moment]
        return Permit(view, 0, wait_until=max(later, default=None), reason=view.key_reason)

    def give_back(
        self, connection: Connection, permit: Permit, next_probe: datetime | None = None
    ) -> None:
        """A probe ends without an answer: its lease goes to the next probe, at once when it
        sent nothing, else not before ``next_probe``."""
        until = permit.probe_until
        if permit.probe is ProbeKind.CIRCUIT and until is not None:
            t.release_probe_if_mine(connection, until=until, next_probe=next_probe)
        elif permit.probe is ProbeKind.KEY and until is not None:
            key = self._key(permit)
            t.release_key_probe_if_mine(
                connection, fingerprint=key, until=until, next_probe=next_probe
            )

    # -- what an answer changes --------------------------------------------------------------

    def answered(
        self, connection: Connection, permit: Permit, *, started: datetime, size: int, now: datetime
    ) -> None:
        """A request that started at ``started`` was answered, with ``size`` messages taken."""
        view = permit.view
        stale = view.last_success_at is None or view.last_success_at < now - ANSWER_NOTE_INTERVAL
        if stale or not view.answered_since_failure():
            t.note_answered(connection, now=now)
        accounts.answered(connection, view, probing=bool(permit.probe), started=started, now=now)
        if view.key_refused or permit.probe is ProbeKind.KEY:
            t.clear_key_unless_refused_since(
                connection, fingerprint=self._key(permit), started=started, now=now
            )
        self.batches.answered(connection, view, size=size, now=now)

    def rate_limited(
        self,
        connection: Connection,
        permit: Permit,
        *,
        retry_after: timedelta | None,
        reason: str,
        now: datetime,
    ) -> datetime:
        """A 429: the key pauses (Retry-After at least) and its rate comes down; returns until."""
        until = now + (retry_after if retry_after is not None else self.settings.backoff_base)
        accounts.rate_limited(
            connection, permit.view, self.pacing, until=until, reason=reason, now=now
        )
        self.give_back(connection, permit)
        return until

    def refused(
        self,
        connection: Connection,
        permit: Permit,
        *,
        status: int,
        reason: str,
        started: datetime,
        now: datetime,
    ) -> None:
        """A 401/403: this key sends no more, but one message per refused-key retry interval."""
        t.refuse_key_unless_cleared_since(
            connection,
            fingerprint=self._key(permit),
            status=status,
            reason=reason,
            started=started,
            now=now,
            probe_at=now + self.settings.refused_key_retry,
        )
        if permit.probe is ProbeKind.CIRCUIT:
            self.give_back(connection, permit)

    def failed(
        self,
        connection: Connection,
        permit: Permit,
        *,
        started: datetime,
        reason: str,
        now: datetime,
    ) -> bool:
        """A request-level failure (5xx, timeout, proxy page): True when it counts against the
        API (everyone pauses, the circuit may open); False when the API answered other requests
        since this one started, which points at a message of this request instead."""
        failures = permit.view.failures + 1
        cooldown = backoff(
            failures, base=self.settings.backoff_base, cap=self.settings.backoff_max, rng=self.rng
        )
        counted = t.count_failure_unless_answered_since(
            connection,
            started=started,
            now=now,
            reason=reason,
            pause_until=now + min(cooldown, self.settings.probe_interval),
            threshold=self.settings.circuit_failures,
            probe_at=now + self.settings.probe_interval,
            probe_until=permit.probe_until if permit.probe is ProbeKind.CIRCUIT else None,
        )
        if permit.probe is ProbeKind.KEY or not counted:  # (a counted probe's lease is over)
            self.give_back(connection, permit, now + self.settings.probe_interval)
        return counted


def _free(next_probe_at: datetime | None, probe_until: datetime | None, now: datetime) -> bool:
    """Whether a probe may start now: its cadence allows it and no other probe is in flight."""
    return (next_probe_at is None or next_probe_at <= now) and (
        probe_until is None or probe_until <= now
    )
