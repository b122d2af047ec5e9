"""The sandbox as an operator's game day uses it: a key rotated at run time, a ledger that
survives a restart, and a fault listing that shows only the faults in force."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx

from sandbox.testing import SandboxAdmin, running_sandbox
from worker.ops.processes import free_port

PATH = "/api/EnqueueCommunications"
ONE = [
    {
        "clientMessageId": "rotated-1",
        "recipient": "46701234567",
        "content": {"$type": "SMSProject", "projectId": 1, "placeholders": ["x"]},
    }
]


def send(url: str, key: str) -> httpx.Response:
    headers = {"X-ApiKey": key, "Content-Type": "application/json"}
    return httpx.post(url + PATH, json={"communications": ONE}, headers=headers, timeout=10)


def test_the_key_can_be_rotated_while_it_runs() -> None:
    with running_sandbox(api_key="old-key") as sandbox:
        assert send(sandbox.url, "old-key").status_code == 200
        changed = httpx.put(f"{sandbox.url}/_sandbox/api-key", json={"api_key": "new-key"})
        assert changed.json() == {"api_key_required": True}
        assert send(sandbox.url, "old-key").status_code == 401
        assert send(sandbox.url, "new-key").status_code == 200
        refused = httpx.put(f"{sandbox.url}/_sandbox/api-key", json={"api_key": " "})
        assert refused.status_code == 400 and "api_key" in refused.json()["error"]


def test_the_fault_listing_shows_chances_only_of_faults_in_force() -> None:
    with running_sandbox() as sandbox:
        admin = SandboxAdmin(sandbox.url)
        assert (admin.faults()["p_slow"], admin.faults()["p_trickle"]) == (None, None)
        admin.set_faults(slow_after_work_ms=100)
        assert (admin.faults()["p_slow"], admin.faults()["p_trickle"]) == (1.0, None)
        admin.set_faults(replace_all=True, **admin.faults())  # the listing given back: no change
        assert admin.faults()["p_slow"] == 1.0


def test_the_ledger_survives_a_restart(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.json"
    port = free_port()
    argv = [sys.executable, "-m", "sandbox", "--port", str(port), "--ledger-file", str(ledger)]
    url = f"http://127.0.0.1:{port}"

    def run_once() -> dict[str, object]:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            SandboxAdmin(url).wait_ready()
            send(url, "any-key")
            return _entry(url)
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=10)

    first = run_once()
    second = run_once()  # the same message again, after a restart: a resend, same tracking id
    assert second["tracking_id"] == first["tracking_id"]
    assert second["times_received"] == 2


def _entry(url: str) -> dict[str, object]:
    answer = httpx.get(f"{url}/_sandbox/ledger", params={"client_message_id": "rotated-1"})
    return dict(answer.json())
