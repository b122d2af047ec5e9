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
    refused_keys: int  # API keys the API refused (401/403) and that send no more
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
            reason=view.reason,
            rate_per_second=min(rates) if rates else None,
            batch_limit=view.batch_limit,
        )

    def describe(self) -> str:
        """One line: 'running', or why not and until when."""
        if self.paused and self.paused_until is not None:
            state = f"PAUSED until {self.paused_until:%Y-%m-%d %H:%M:%S} UTC"
        elif self.circuit_open:
            state = "circuit OPEN: one probe at a time"
            if self.next_probe_at is not None:
                state += f", next at {self.next_probe_at:%H:%M:%S} UTC"
        else:
            state = "running"
        extras = []
        if self.refused_keys:
            extras.append(
                f"{self.refused_keys} API key(s) refused: fix WIRAYA_API_KEY, restart the workers"
            )
        if self.failures:
            extras.append(f"{self.failures} failed requests in a row")
        if self.rate_per_second:
            extras.append(f"at most {self.rate_per_second:.2f} requests/s")
        if self.batch_limit:
            extras.append(f"batches limited to {self.batch_limit}")
        if self.reason and (self.paused or self.circuit_open or self.failures):
            extras.append(f"last: {self.reason}")
        return state + (f" ({'; '.join(extras)})" if extras else "")
