"""The sandbox pushes delivery reports like Wiraya, and the real receiver stores them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import httpx
import orjson
import pytest
from sqlalchemy import Engine

from sandbox.recipients import NOT_DELIVERED_SUFFIX
from sandbox.reports import Pushing
from sandbox.testing import RunningSandbox, running_sandbox
from tests.e2e.harness import free_port
from tests.integration.reports.harness import serving, stored_reports
from worker.ops.processes import wait_for
from worker.reports.app import create_app
from worker.settings import ReceiverSettings

AUTH = "wiraya:7b2e90c4d15a3f68"
FAST = timedelta(milliseconds=100)


@contextmanager
def receiver(engine: Engine, port: int | None = None) -> Iterator[str]:
    url = engine.url.render_as_string(hide_password=False)
    settings = ReceiverSettings.from_environ(
        {"OUTBOX_CALLBACK_AUTH": AUTH, "OUTBOX_DATABASE_URL": url}
    )
    with serving(create_app(engine, settings), port=port) as base:
        yield base + "/wiraya/callbacks"


def send(sandbox: RunningSandbox, *recipients: str) -> dict[str, str]:
    """Enqueue one SMS per recipient; returns clientMessageId -> trackingId."""
    body = {
        "communications": [
            {
                "clientMessageId": f"c{number}",
                "recipient": to,
                "content": {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": "hi"},
            }
            for number, to in enumerate(recipients)
        ]
    }
    answer = httpx.post(
        sandbox.url + "/api/EnqueueCommunications",
        content=orjson.dumps(body),
        headers={"X-ApiKey": "key", "Content-Type": "application/json"},
        timeout=30,
    )
    answer.raise_for_status()
    return {cid: result["trackingId"] for cid, result in answer.json()["results"].items()}


def statuses(engine: Engine) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for row in stored_reports(engine):
        found.setdefault(row.tracking_id, []).append(row.status)
    return found


def test_every_accepted_message_is_reported_batched_with_basic_auth(engine: Engine) -> None:
    with receiver(engine) as url:
        pushing = Pushing(url, AUTH, interval=FAST, p_repeat=0.0, p_early=0.0)
        with running_sandbox(reports=pushing) as sandbox:
            tracking = send(sandbox, "46701234567", "4670" + NOT_DELIVERED_SUFFIX, "46701234568")
            wait_for(
                lambda: len(stored_reports(engine)) == 3 or None,
                timeout=10,
                what="len(stored_reports(engine)) == 3",
            )
            assert sandbox.service.reports is not None
            counts = sandbox.service.reports.counts
    assert statuses(engine) == {
        tracking["c0"]: ["DELIVERED"],
        tracking["c1"]: ["NOT_DELIVERED"],
        tracking["c2"]: ["DELIVERED"],
    }
    assert counts["answered 200"] == 1  # the three came in one batch
    assert orjson.loads(stored_reports(engine)[0].report)["doneAt"].endswith("Z")


def test_early_reports_arrive_before_the_send_is_answered(engine: Engine) -> None:
    with receiver(engine) as url:
        pushing = Pushing(url, AUTH, interval=timedelta(hours=1), p_early=1.0, p_repeat=0.0)
        with running_sandbox(reports=pushing) as sandbox:
            tracking = send(sandbox, "46701234567", "46701234568")
            # No round has run yet: the reports were pushed, and stored, before the answer.
            assert statuses(engine) == {t: ["DELIVERED"] for t in tracking.values()}


def test_repeated_reports_are_stored_once(engine: Engine) -> None:
    with receiver(engine) as url:
        pushing = Pushing(url, AUTH, interval=FAST, p_repeat=1.0, p_early=0.0)
        with running_sandbox(reports=pushing) as sandbox:
            send(sandbox, *(f"467012345{n:02d}" for n in range(10)))
            pusher = sandbox.service.reports
            assert pusher is not None
            wait_for(
                lambda: pusher.counts["pushed"] == 20 or None,
                timeout=10,
                what="pusher.counts['pushed'] == 20",
            )
    assert pusher.counts["repeated"] == 10
    assert len(stored_reports(engine)) == 10


def test_reports_not_answered_2xx_are_pushed_again(engine: Engine) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/wiraya/callbacks"
    pushing = Pushing(url, AUTH, interval=FAST, p_repeat=0.0, p_early=0.0)
    with running_sandbox(reports=pushing) as sandbox:
        pusher = sandbox.service.reports
        assert pusher is not None
        send(sandbox, "46701234567", "46701234568")
        wait_for(
            lambda: pusher.counts["unanswered"] >= 2 or None,
            timeout=10,
            what="pusher.counts['unanswered'] >= 2",
        )  # nobody listens yet
        assert pusher.pending == 2
        with receiver(engine, port=port):
            wait_for(
                lambda: len(stored_reports(engine)) == 2 or None,
                timeout=10,
                what="len(stored_reports(engine)) == 2",
            )
        assert pusher.pending == 0


def test_a_wrong_login_is_refused_and_retried(engine: Engine) -> None:
    with receiver(engine) as url:
        pushing = Pushing(url, "wiraya:not-the-password", interval=FAST, p_early=0.0)
        with running_sandbox(reports=pushing) as sandbox:
            pusher = sandbox.service.reports
            assert pusher is not None
            send(sandbox, "46701234567")
            wait_for(
                lambda: pusher.counts["answered 401"] >= 2 or None,
                timeout=10,
                what="pusher.counts['answered 401'] >= 2",
            )
            assert pusher.pending >= 1
    assert stored_reports(engine) == []


def test_pushing_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="p_early"):
        Pushing("http://127.0.0.1:1/", AUTH, p_early=1.5)
    with pytest.raises(ValueError, match="login"):
        Pushing("http://127.0.0.1:1/", "no-colon")
