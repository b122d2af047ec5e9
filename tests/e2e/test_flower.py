"""Flower, the ops alarm: `celery -A worker flower` shows each batch's summary and failing tasks.

Runs Flower as README says (basic auth from FLOWER_BASIC_AUTH), against the stack's private
Redis, with a real worker and beat: first with the key the sandbox accepts, then with a wrong
one, whose dispatches must show up as failed tasks.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from models import NewMessage, SMSProject
from tests.e2e.harness import CELERY, Stack, free_port, wait_for

CREDENTIALS = "ops:flower-test-password"


def _get(url: str, *, auth: str | None = CREDENTIALS) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        body = error.read()
        error.close()
        return error.code, body
    except OSError:
        return 0, b""


def _dispatches(flower: str) -> list[dict[str, Any]]:
    status, body = _get(f"{flower}/api/tasks?taskname=outbox.dispatch")
    return list(json.loads(body).values()) if status == 200 else []


def _messages(prefix: str, count: int) -> list[NewMessage]:
    return [
        NewMessage.create(
            client_message_id=f"{prefix}-{n}",
            recipient="46701234567",
            content=SMSProject(project_id=1, placeholders=["x"]),
        )
        for n in range(count)
    ]


@pytest.mark.timeout(120)
def test_flower_shows_batch_summaries_and_wrong_key_failures(stack: Stack) -> None:
    stack.start_sandbox("--api-key", "right-key")
    port = free_port()
    flower_env = stack.worker_env(FLOWER_BASIC_AUTH=CREDENTIALS)
    flower = stack._service(
        "flower",
        [CELERY, "-A", "worker", "flower", "--address=127.0.0.1", f"--port={port}"],
        flower_env,
    )
    flower.start()
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _get(f"{url}/healthcheck")[0] == 200, timeout=30, what="Flower to answer")

    # Basic auth guards the dashboard and the API; /metrics is open for Prometheus.
    assert _get(f"{url}/api/tasks", auth=None)[0] == 401
    assert _get(f"{url}/api/tasks", auth="ops:wrong")[0] == 401
    status, body = _get(f"{url}/metrics", auth=None)
    assert status == 200 and b"flower_events_total" in body

    stack.start_outbox(WIRAYA_API_KEY="right-key")
    stack.enqueue(_messages("ok", 120))
    stack.wait_all_final(120, timeout=30)

    def summaries() -> list[dict[str, Any]]:
        return [
            task
            for task in _dispatches(url)
            if task["state"] == "SUCCESS" and "'accepted': " in str(task.get("result"))
        ]

    sent = wait_for(
        lambda: [t for t in summaries() if "'state': 'sent'" in t["result"]],
        timeout=20,
        what="a dispatch summary in Flower",
    )
    assert sum(int(t["result"].split("'accepted': ")[1].split(",")[0]) for t in sent) == 120
    assert {t["name"] for t in sent} == {"outbox.dispatch"}

    stack.stop_outbox()
    stack.start_outbox(WIRAYA_API_KEY="wrong-key")
    stack.enqueue(_messages("refused", 10))
    failed = wait_for(
        lambda: [t for t in _dispatches(url) if t["state"] == "FAILURE"],
        timeout=30,
        what="a failed dispatch in Flower",
    )
    assert "DispatchAlarm" in failed[0]["exception"]
    assert "Unauthorized" in failed[0]["exception"]
    assert stack.count("status = 'pending'") == 10  # nothing is lost or failed
