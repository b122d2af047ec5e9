"""The API key is planted in every error path, and no text the client returns or logs holds it.

Paths: the HTTP stack refusing the header (a key with a stray space, as h11 words it), a server
echoing the key in each kind of answer (400, 401, 403, 413, 429, 500, an HTML page, a per-message
error of a 2xx), a reason long enough to be cut inside the key, and an unexpected exception.
Downstream (last_error, the gate's reason, the dispatch summary, `outbox stats`) is checked by
tests/integration/roles/test_secrets.py on the dispatcher.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import Engine, text

from sandbox.testing import running_sandbox
from tests.integration.dispatch.harness import Outbox, recipient
from worker.ops.cli import main
from worker.wiraya.client import WirayaClient
from worker.wiraya.redaction import REDACTED, Redactor
from worker.wiraya.results import Answered, Communication, SendResult

KEY = "wk-live-7f3a9c2e5b1d4068"
MESSAGE = Communication("m1", "46701234567", {"$type": "SMSFromAlpha", "sender": "W", "text": "hi"})


class Echo(BaseHTTPRequestHandler):
    """Answers every POST with the status the path asks for, quoting the X-ApiKey header."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        key = self.headers["X-ApiKey"]
        status, kind, body = Echo.answer(self.server.status, key)  # type: ignore[attr-defined]
        payload = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    @staticmethod
    def answer(status: int, key: str) -> tuple[int, str, str]:
        if status == 200:
            result = {"success": False, "isTransientError": False, "errorMessage": f"bad {key}"}
            return 200, "application/json", json.dumps({"results": {"m1": result}})
        if status == 599:  # an HTML page from a gateway
            return 502, "text/html", f"<html><body>upstream refused key {key}</body></html>"
        if status == 598:  # a reason cut just inside the key
            return 400, "application/json", json.dumps({"message": "x" * 490 + key})
        return status, "application/json", json.dumps({"message": f"key {key!r} refused"})

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def echo() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def texts(result: SendResult) -> list[str]:
    if isinstance(result, Answered):
        return [getattr(outcome, "reason", "") for outcome in result.outcomes.values()]
    return [result.reason]


def assert_key_absent(result: SendResult, caplog: pytest.LogCaptureFixture) -> None:
    shown = [*texts(result), *(record.getMessage() for record in caplog.records)]
    assert not [text for text in shown if KEY in text or KEY[:8] in text]
    assert any(REDACTED in text for text in shown)


@pytest.mark.parametrize("status", [200, 400, 401, 403, 413, 429, 500, 598, 599])
def test_a_key_echoed_in_any_answer_never_leaves_the_client(
    echo: ThreadingHTTPServer, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    echo.status = status  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{echo.server_address[1]}"
    caplog.set_level(logging.DEBUG)
    with WirayaClient(url, KEY, timedelta(seconds=5)) as client:
        result = client.send([MESSAGE])
    assert_key_absent(result, caplog)


def test_a_header_the_http_stack_refuses_is_reported_without_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with (
        running_sandbox(seed=1) as sandbox,
        WirayaClient(sandbox.url, KEY + " ", timedelta(seconds=5)) as client,
    ):
        result = client.send([MESSAGE])
    assert "header" in result.reason.lower()  # what went wrong is still said
    assert_key_absent(result, caplog)


class Broken(WirayaClient):
    """A client whose exchange meets a defect whose text quotes the key."""

    def _exchange(self, *_: Any) -> Any:
        raise RuntimeError(f"headers were [(b'X-ApiKey', {KEY.encode()!r})]")


def test_an_unexpected_error_quoting_the_key_is_logged_and_returned_without_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with (
        running_sandbox(seed=1) as sandbox,
        Broken(sandbox.url, KEY, timedelta(seconds=5)) as client,
    ):
        result = client.send([MESSAGE])
    assert "RuntimeError" in result.reason
    assert_key_absent(result, caplog)


SECRET = KEY + "/"  # "/" is percent-encoded as %2F


@pytest.mark.parametrize(
    "text",
    [
        f"error: {SECRET} refused",
        f"Illegal header value b'{SECRET} '",
        f"error: {json.dumps(SECRET)} refused",
        f"GET /check?key={SECRET.replace('/', '%2F')} refused",
        f"error: a reason cut inside the key {SECRET[:9]}…",
    ],
    ids=["plain", "bytes", "json", "percent", "cut"],
)
def test_every_spelling_of_the_key_is_redacted(text: str) -> None:
    shown = Redactor(SECRET).text(text)
    assert KEY[:5] not in shown and REDACTED in shown


def test_a_sandboxs_stand_in_key_is_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    with running_sandbox(seed=1) as sandbox:
        sandbox_client = WirayaClient(sandbox.url, "sandbox", timedelta(seconds=5), secret=False)
        with sandbox_client:
            assert Redactor(None).text("the sandbox said no") == "the sandbox said no"
            assert isinstance(sandbox_client.send([MESSAGE]), Answered)


@pytest.mark.parametrize("status", [400, 401, 500, 599])
def test_a_key_echoed_to_the_dispatcher_reaches_no_row_summary_log_or_cli(
    engine: Engine,
    echo: ThreadingHTTPServer,
    status: int,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    echo.status = status  # type: ignore[attr-defined]
    caplog.set_level(logging.DEBUG)
    with running_sandbox(seed=1) as sandbox:
        outbox = Outbox(engine, sandbox)
        try:
            outbox.enqueue(recipient(1), recipient(2))
            url = f"http://127.0.0.1:{echo.server_address[1]}"
            summaries = [
                outbox.dispatcher(base_url=url, WIRAYA_API_KEY=KEY).dispatch_once().as_dict()
                for _ in range(3)
            ]
        finally:
            outbox.close()
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT last_error FROM outbox_messages UNION ALL "
                "SELECT reason FROM outbox_dispatch_gate UNION ALL "
                "SELECT reason FROM outbox_refused_keys"
            )
        )
        stored = [row[0] or "" for row in rows]
    url_of_engine = engine.url.render_as_string(hide_password=False)
    assert main(["--database-url", url_of_engine, "stats", "--json"]) == 0
    assert main(["--database-url", url_of_engine, "stats"]) == 0
    shown = [
        *stored,
        json.dumps(summaries),
        capsys.readouterr().out,
        *(record.getMessage() for record in caplog.records),
    ]
    assert [text for text in shown if KEY[:8] in text] == []
    assert any(REDACTED in text for text in stored)
