"""The gate as operators read it: `outbox stats`, the metrics, the runbook's words for it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    Connection,
)

from worker.dispatch.gate.state import GateView, read


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
            why = "for Retry-After" if "RateLimited" in (self.reason or "") else "after a failure"
            brakes.append(f"PAUSED {why} until {self.paused_until:%Y-%m-%d %H:%M:%S} UTC")
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
