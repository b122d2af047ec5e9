"""The gate as operators read it: `outbox stats`, the metrics, the runbook's words for it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from worker.dispatch.gate.names import tenants_of
from worker.dispatch.gate.state import GateView, key_gates, read


def read_gate(connection: Connection) -> GateView:
    """The gate as operators read it (no worker's own key)."""
    return read(connection, fingerprint="")


@dataclass(frozen=True)
class GateState:
    """The shared sending state, as `outbox stats` and the metrics show it."""

    paused: bool  # no worker sends before paused_until
    paused_until: datetime | None
    failures: int  # counted request-level failures in a row
    circuit_open: bool  # failures reached OUTBOX_CIRCUIT_FAILURES: one probe at a time
    probing: bool  # the open circuit's probe is in flight
    next_probe_at: datetime | None
    refused_keys: int  # API keys refused (401/403) since the API last answered any key
    forbidden_keys: int  # of those, refused with a 403: Wiraya's side, not the key
    reason: str | None
    rate_per_second: float | None  # the request rate in force across all workers
    batch_limit: int | None  # smaller batches after a too-many-items answer

    @property
    def refused_key(self) -> bool:
        """True while some API key is refused."""
        return self.refused_keys > 0

    @property
    def spacing_seconds(self) -> float:
        """The spacing between requests the rate imposes (0: no rate in force)."""
        return 1 / self.rate_per_second if self.rate_per_second else 0.0

    @classmethod
    def of(
        cls,
        view: GateView,
        *,
        now: datetime,
        circuit_failures: int,
        rate_limit: float | None = None,
    ) -> GateState:
        paused = view.paused(now)
        circuit_open = view.circuit_open(circuit_failures)
        rates = [rate for rate in (view.rate, rate_limit) if rate]
        return cls(
            paused=paused,
            paused_until=view.paused_until if paused else None,
            failures=view.failures,
            circuit_open=circuit_open,
            probing=circuit_open and view.probe_until is not None and view.probe_until > now,
            next_probe_at=view.next_probe_at if circuit_open else None,
            refused_keys=view.refused_key_count,
            forbidden_keys=view.forbidden_key_count,
            reason=view.reason,
            rate_per_second=min(rates) if rates else None,
            batch_limit=view.batch_limit,
        )

    def describe(self) -> str:
        """One line: 'running', or the brake in force, when it ends, and what to do."""
        extras = []
        if self.failures and not self.circuit_open:
            extras.append(f"{self.failures} failed requests in a row")
        if self.rate_per_second:
            extras.append(f"rate limited: at most {self.rate_per_second:.2f} requests/s")
        if self.batch_limit:
            extras.append(f"batches limited to {self.batch_limit}")
        if self.reason and (self.paused or self.circuit_open or self.failures):
            extras.append(f"last: {self.reason}")
        brakes = self._brakes()
        return "; ".join(brakes or ["running"]) + (f" ({'; '.join(extras)})" if extras else "")

    def _brakes(self) -> list[str]:
        """Every brake in force, each with when it ends (the runbook's words for them)."""
        brakes = []
        if self.circuit_open:
            brake = "circuit OPEN: the API fails; one probe at a time"
            if self.next_probe_at is not None:
                brake += f", next probe at {self.next_probe_at:%H:%M:%S} UTC"
            brakes.append(brake)
        elif self.paused and self.paused_until is not None:
            brakes.append(_paused(self.paused_until, self.reason))
        unauthorized = self.refused_keys - self.forbidden_keys
        if unauthorized:
            brakes.append(
                f"API key REFUSED (401) for {unauthorized} key(s): set WIRAYA_API_KEY to a key "
                "Wiraya accepts and restart the workers; ends at the first answer"
            )
        if self.forbidden_keys:
            brakes.append(
                "REFUSED (403): Wiraya does not allow this address or account; ask Wiraya to "
                "allow it, then `outbox resume` (or the refused key's retry) sends again"
            )
        return brakes


def _paused(until: datetime, reason: str | None) -> str:
    why = "for Retry-After" if "RateLimited" in (reason or "") else "after a failure"
    return f"PAUSED {why} until {until:%Y-%m-%d %H:%M:%S} UTC"


@dataclass(frozen=True)
class KeyState:
    """A tenant's own key's brakes (its row of outbox_key_gates), named by the tenants it
    serves: its 429 pause while it lasts and its learnt rate. The pause after the API's
    failures, the circuit and the batch limit are every key's: the gate's (GateState)."""

    fingerprint: str
    tenants: tuple[str, ...]  # those the workers' WIRAYA_API_KEYS give it (none: none now)
    paused_until: datetime | None  # its 429 pause, while it lasts
    reason: str | None
    rate_per_second: float | None  # its learnt request rate

    @property
    def paused(self) -> bool:
        """True while the key's workers wait out its 429."""
        return self.paused_until is not None

    @property
    def in_force(self) -> bool:
        """True while a brake holds the key back: its pause, or a learnt rate."""
        return self.paused or self.rate_per_second is not None

    @property
    def named(self) -> str:
        """'key of clinic, shop', or the key's fingerprint when no tenant names it."""
        return f"key of {', '.join(self.tenants)}" if self.tenants else f"key {self.fingerprint}"

    def describe(self) -> str:
        """One line: 'running', or its pause and when it ends, with its rate."""
        state = _paused(self.paused_until, self.reason) if self.paused_until else "running"
        extras = []
        if self.rate_per_second:
            extras.append(f"rate limited: at most {self.rate_per_second:.2f} requests/s")
        if self.reason and self.paused:
            extras.append(f"last: {self.reason}")
        return state + (f" ({'; '.join(extras)})" if extras else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "tenants": list(self.tenants),
            "fingerprint": self.fingerprint,
            "paused": self.paused,
            "paused_until": None if self.paused_until is None else self.paused_until.isoformat(),
            "reason": self.reason,
            "rate_per_second": self.rate_per_second,
            "state": self.describe(),
        }


def read_keys(connection: Connection, now: datetime) -> list[KeyState]:
    """Every key's own brakes (each row of outbox_key_gates), named by the tenants the workers
    wrote on it; by tenant name, then fingerprint."""
    states = [
        KeyState(
            fingerprint=row.fingerprint,
            tenants=tenants_of(row.tenants),
            paused_until=row.paused_until if row.paused_until and row.paused_until > now else None,
            reason=row.reason,
            rate_per_second=row.rate,
        )
        for row in connection.execute(select(key_gates))
    ]
    return sorted(states, key=lambda state: (not state.tenants, state.tenants, state.fingerprint))
