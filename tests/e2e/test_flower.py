"""Flower, the ops alarm: `celery -A worker flower` shows each batch's summary and failing tasks.

Runs Flower as docs/operations.md#flower says (basic auth from FLOWER_BASIC_AUTH), against the
stack's private Redis, with a real worker and beat: first with the key the sandbox accepts,
then with a wrong one, whose dispatches must show up as failed tasks.
"""

from __future__ import annotations

from typing import Any

import pytest

from models import NewMessage, SMSProject
from tests.e2e.harness import (
    Stack,
    accepted_in_summaries,
    flower_dispatches,
    http_get,
    wait_for,
)

CREDENTIALS = "ops:flower-test-password"


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
    url = stack.start_flower(CREDENTIALS)

    # Basic auth guards the dashboard, the API and /metrics (Prometheus logs in too).
    assert http_get(f"{url}/api/tasks")[0] == 401
    assert http_get(f"{url}/api/tasks", auth="ops:wrong")[0] == 401
    assert http_get(f"{url}/metrics")[0] == 401
    assert http_get(f"{url}/metrics", auth="ops:wrong")[0] == 401
    status, body = http_get(f"{url}/metrics", auth=CREDENTIALS)
    assert status == 200 and b"flower_events_total" in body

    stack.start_outbox(WIRAYA_API_KEY="right-key")
    stack.enqueue(_messages("ok", 120))
    stack.wait_all_final(120, timeout=30)

    def sent() -> list[dict[str, Any]]:
        return [
            task
            for task in flower_dispatches(url, CREDENTIALS)
            if task["state"] == "SUCCESS" and "'state': 'sent'" in str(task.get("result"))
        ]

    wait_for(
        lambda: accepted_in_summaries(sent()) == 120,
        timeout=20,
        what="Flower to show every message in a dispatch summary",
    )
    assert {t["name"] for t in sent()} == {"outbox.dispatch"}

    stack.stop_outbox()
    stack.start_outbox(WIRAYA_API_KEY="wrong-key")
    stack.enqueue(_messages("refused", 10))
    failed = wait_for(
        lambda: [t for t in flower_dispatches(url, CREDENTIALS) if t["state"] == "FAILURE"],
        timeout=30,
        what="a failed dispatch in Flower",
    )
    assert "DispatchAlarm" in failed[0]["exception"]
    assert "Unauthorized" in failed[0]["exception"]
    # Nothing is lost or failed: a dispatch whose permit came before the refusal was recorded
    # may still be sending the batch under the same key, and puts it back pending as well.
    wait_for(
        lambda: stack.count("status = 'pending'") == 10,
        timeout=10,
        what="the refused batch back to pending",
    )
    assert stack.count("status IN ('failed', 'accepted')") == 120
