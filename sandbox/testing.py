"""Helpers for tests: run a sandbox in-process, or control one running elsewhere over HTTP.

    with running_sandbox(faults=Faults(p500=0.5), seed=7) as sandbox:
        client = WirayaClient(sandbox.url, "key", timedelta(seconds=5))
        ...
        sandbox.set_faults(outage=True)
        assert sandbox.ledger()["42"].times_received == 1

`SandboxAdmin(url)` offers the same methods for a sandbox started as a separate process
(`outbox sandbox` or `python -m sandbox`), through its /_sandbox/ endpoints.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sandbox.api import EnqueueService
from sandbox.faults import Faults
from sandbox.ledger import Entry
from sandbox.reports import Pushing, ReportPusher
from sandbox.server import SandboxServer, start


@dataclass
class RunningSandbox:
    """A sandbox serving on a background thread of this process."""

    server: SandboxServer

    @property
    def url(self) -> str:
        """Base URL for the client, e.g. http://127.0.0.1:54321."""
        return self.server.url

    @property
    def service(self) -> EnqueueService:
        """The endpoint's state, for assertions the methods below do not cover."""
        return self.server.service

    @property
    def faults(self) -> Faults:
        """The faults in force."""
        return self.service.faults

    def set_faults(self, faults: Faults | None = None, **changes: Any) -> Faults:
        """Replace the faults (`faults`), or change some of them (`outage=True`); returns them."""
        new = replace(faults or self.service.faults, **changes)
        self.service.set_faults(new)
        return new

    def ledger(self) -> dict[str, Entry]:
        """Every message received, keyed by clientMessageId."""
        return self.service.ledger.snapshot()

    def entry(self, client_message_id: str) -> Entry | None:
        """One message's ledger entry, or None when it was never received."""
        return self.service.ledger.get(client_message_id)

    def stats(self) -> dict[str, Any]:
        """The counters the /_sandbox/stats endpoint shows."""
        return self.service.stats.to_json()

    @property
    def request_count(self) -> int:
        """API requests received so far, whatever they were answered."""
        return self.service.stats.count("requests")

    def status_count(self, status: int) -> int:
        """API requests answered with `status`."""
        return self.service.stats.status_count(status)

    def reset(self) -> None:
        """Empty the ledger and stats and restart the dice; faults stay."""
        self.service.reset()


@contextmanager
def running_sandbox(
    faults: Faults | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int | None = 0,
    api_key: str | list[str] | None = None,
    reports: Pushing | None = None,
) -> Iterator[RunningSandbox]:
    """Serve a sandbox (on a free port by default) for the duration of the block; with
    ``reports``, it pushes a delivery report for each message it accepts."""
    pusher = ReportPusher(reports, seed=seed).start() if reports else None
    service = EnqueueService(faults, seed=seed, api_key=api_key, reports=pusher)
    server = start(service, host, port)
    try:
        yield RunningSandbox(server)
    finally:
        server.stop()


class SandboxAdmin:
    """Controls a sandbox in another process through its admin endpoints (stdlib HTTP only)."""

    def __init__(self, url: str, timeout: timedelta = timedelta(seconds=10)) -> None:
        self.url = url.rstrip("/")
        self._timeout = timeout.total_seconds()

    def wait_ready(self, timeout: timedelta = timedelta(seconds=10)) -> None:
        """Return once the sandbox answers; TimeoutError when it does not in time."""
        deadline = time.monotonic() + timeout.total_seconds()
        while True:
            try:
                self._call("GET", "health")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no sandbox answering at {self.url}") from None
                time.sleep(0.05)

    def faults(self) -> dict[str, Any]:
        """The faults in force, in the endpoint's JSON form (durations as `*_ms`)."""
        return dict(self._call("GET", "faults"))

    def set_faults(self, *, replace_all: bool = False, **changes: Any) -> dict[str, Any]:
        """Change faults, e.g. `set_faults(outage=True, latency_ms=50)`; returns all of them."""
        return dict(self._call("PUT" if replace_all else "POST", "faults", changes))

    def ledger(self) -> dict[str, Entry]:
        """Every message received, keyed by clientMessageId."""
        entries = self._call("GET", "ledger")["entries"]
        return {key: _entry(value) for key, value in entries.items()}

    def stats(self) -> dict[str, Any]:
        """The sandbox's counters."""
        return dict(self._call("GET", "stats"))

    def reset(self) -> None:
        """Empty the ledger and stats and restart the dice; faults stay."""
        self._call("POST", "reset", {})

    def _call(self, method: str, path: str, payload: object = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            f"{self.url}/_sandbox/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            exc.close()
            raise ValueError(f"sandbox admin {method} {path}: {exc.code} {detail}") from None


def _entry(data: dict[str, Any]) -> Entry:
    def moment(value: str | None) -> datetime | None:
        return datetime.fromisoformat(value) if value else None

    return Entry(
        client_message_id=data["client_message_id"],
        recipient=data["recipient"],
        first_received=datetime.fromisoformat(data["first_received"]),
        last_received=datetime.fromisoformat(data["last_received"]),
        times_received=data["times_received"],
        tracking_id=data["tracking_id"],
        accepted_at=moment(data["accepted_at"]),
        key=data.get("key", ""),
    )
