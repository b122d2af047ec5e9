"""`outbox receiver` as a real process: it starts, stores what Wiraya pushes, and stops cleanly."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import orjson
from sqlalchemy import Engine

from tests.e2e.harness import free_port
from tests.integration.reports.harness import accept, delivery, stored_reports, tracking

OUTBOX = str(Path(sys.executable).with_name("outbox"))
AUTH = "wiraya:0e6b3f9a71c2d458"


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "WIRAYA_"))}
    env.update(CELERY_BROKER_URL="filesystem://", **extra)
    return env


def post(url: str, body: bytes, login: str) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(login.encode()).decode(),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def test_the_receiver_process_stores_reports_and_stops_on_sigterm(postgres_engine: Engine) -> None:
    (message,) = accept(postgres_engine, 1)
    url = postgres_engine.url.render_as_string(hide_password=False)
    port = free_port()
    process = subprocess.Popen(
        [OUTBOX, "--database-url", url, "receiver", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment(OUTBOX_CALLBACK_AUTH=AUTH),
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(f"receiver listening on http://127.0.0.1:{port}"), line
        endpoint = f"http://127.0.0.1:{port}/wiraya/callbacks"
        body = orjson.dumps(
            [
                {
                    "trackingId": tracking(1),
                    "status": "DELIVERED",
                    "doneAt": "2026-12-02T10:00:05Z",
                },
                {"trackingId": tracking(2), "status": "NOT_DELIVERED"},
            ]
        )
        assert post(endpoint, body, "wiraya:wrong-password-here")[0] == 401
        status, answer = post(endpoint, body, AUTH)
        assert status == 200, answer
        assert orjson.loads(answer)["stored"] == 2
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as health:
            assert orjson.loads(health.read()) == {"ok": True, "database": "up"}
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, out
    assert "AUTH" not in out and AUTH.split(":")[1] not in out
    # The access log keeps the callbacks but not the answered health checks (one every few
    # seconds from a container's probe).
    assert "POST /wiraya/callbacks" in out and "GET /health" not in out, out
    assert delivery(postgres_engine, message)[0] == "DELIVERED"
    assert len(stored_reports(postgres_engine)) == 2


def test_the_receiver_will_not_start_without_its_login(sqlite_url: str) -> None:
    done = subprocess.run(
        [OUTBOX, "--database-url", sqlite_url, "receiver", "--port", str(free_port())],
        capture_output=True,
        text=True,
        env=environment(),
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "outbox: invalid configuration: OUTBOX_CALLBACK_AUTH: required "
        "(user:password for Wiraya's login)"
    ]


def test_a_port_in_use_is_one_clear_line(sqlite_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [OUTBOX, "--database-url", sqlite_url, "receiver", "--port", str(port)],
            capture_output=True,
            text=True,
            env=environment(OUTBOX_CALLBACK_AUTH=AUTH),
            timeout=60,
        )
    assert done.returncode == 1
    assert (
        done.stderr.strip() == f"outbox: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
