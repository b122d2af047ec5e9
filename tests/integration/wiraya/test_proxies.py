"""Proxies from the environment: never for a local sandbox, the standard variables for the API.

A real HTTP proxy runs in the test (it forwards plain-http requests and refuses CONNECT
tunnels, noting everything it is asked), and the environment points every proxy variable at it.
"""

from __future__ import annotations

import base64
import http.client
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from sandbox.testing import RunningSandbox, running_sandbox
from worker.wiraya.client import WirayaClient
from worker.wiraya.results import Answered, Communication, TransportError

KEY = "sk_live_proxy_must_not_see_me"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
MESSAGE = Communication(
    "m1", "46701234567", {"$type": "SMSProject", "projectId": 1, "placeholders": []}
)


@dataclass
class Proxy:
    """What the proxy was asked: request lines and Proxy-Authorization headers."""

    url: str
    seen: list[str] = field(default_factory=list)
    credentials: list[str | None] = field(default_factory=list)


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def do_CONNECT(self) -> None:
        self._note()
        self.send_response(403, "tunnels refused by the test proxy")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        self._note()
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        target = urlsplit(self.path)
        upstream = http.client.HTTPConnection(target.hostname or "", target.port or 80, timeout=10)
        forwarded = {k: v for k, v in self.headers.items() if not k.lower().startswith("proxy-")}
        upstream.request("POST", target.path, body, forwarded)
        answer = upstream.getresponse()
        data = answer.read()
        upstream.close()
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.getheader("Content-Type", "text/plain"))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _note(self) -> None:
        self.server.proxy.seen.append(f"{self.command} {self.path}")
        self.server.proxy.credentials.append(self.headers.get("Proxy-Authorization"))

    def log_message(self, format: str, *args: object) -> None:
        pass


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    proxy: Proxy


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Proxy]:
    """A running proxy, and every proxy variable (both spellings) pointing at it, no NO_PROXY."""
    server = _ProxyServer(("127.0.0.1", 0), _ProxyHandler)
    server.proxy = Proxy(f"http://127.0.0.1:{server.server_address[1]}")
    for name in PROXY_VARIABLES:
        for spelling in (name, name.lower()):
            monkeypatch.delenv(spelling, raising=False)
    for name in PROXY_VARIABLES[:3]:
        monkeypatch.setenv(name, server.proxy.url)
        monkeypatch.setenv(name.lower(), server.proxy.url)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.proxy
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with running_sandbox() as running:
        yield running


def test_the_proxy_forwards_what_it_is_given(proxy: Proxy, sandbox: RunningSandbox) -> None:
    """The proxy works: a plain client that honours the variables goes through it."""
    import httpx

    with httpx.Client(trust_env=True) as plain:
        response = plain.post(
            sandbox.url + "/api/EnqueueCommunications",
            content=b'{"communications": []}',
            headers={"X-ApiKey": "k", "Content-Type": "application/json"},
        )

    assert response.status_code == 200
    assert proxy.seen == [f"POST {sandbox.url}/api/EnqueueCommunications"]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_local_sandbox_is_reached_directly_whatever_the_proxy_variables(
    proxy: Proxy, sandbox: RunningSandbox, host: str
) -> None:
    port = urlsplit(sandbox.url).port
    with WirayaClient(f"http://{host}:{port}", KEY, timedelta(seconds=5)) as client:
        result = client.send([MESSAGE])

    assert isinstance(result, Answered)
    assert proxy.seen == []  # neither the message nor the key went through the proxy
    assert sandbox.request_count == 1


def test_a_named_sandbox_host_is_reached_directly(proxy: Proxy) -> None:
    name = socket.gethostname()
    address = socket.gethostbyname(name)  # the sandbox listens where the name leads
    with running_sandbox(host=address) as sandbox:
        port = urlsplit(sandbox.url).port
        url = f"http://{name}:{port}"
        with WirayaClient(url, KEY, timedelta(seconds=5), sandbox_hosts={name.lower()}) as client:
            result = client.send([MESSAGE])

    assert isinstance(result, Answered)
    assert proxy.seen == []


def test_the_real_api_goes_through_the_proxy_the_environment_names(
    proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name)  # HTTPS_PROXY alone names the proxy for https

    with WirayaClient("https://api.wiraya.test", KEY, timedelta(seconds=5)) as client:
        result = client.send([MESSAGE])

    assert isinstance(result, TransportError)
    assert proxy.seen == ["CONNECT api.wiraya.test:443"]


def test_all_proxy_serves_when_no_scheme_proxy_is_set(
    proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name)

    with WirayaClient("https://api.wiraya.test", KEY, timedelta(seconds=5)) as client:
        client.send([MESSAGE])

    assert proxy.seen == ["CONNECT api.wiraya.test:443"]


@pytest.mark.parametrize("no_proxy", ["api.wiraya.test", ".wiraya.test", "wiraya.test", "*"])
def test_no_proxy_sends_a_host_direct(
    proxy: Proxy, monkeypatch: pytest.MonkeyPatch, no_proxy: str
) -> None:
    monkeypatch.setenv("NO_PROXY", no_proxy)
    monkeypatch.setenv("no_proxy", no_proxy)

    with WirayaClient("https://api.wiraya.test", KEY, timedelta(seconds=3)) as client:
        result = client.send([MESSAGE])

    assert isinstance(result, TransportError)  # no such host: it went direct, and failed
    assert proxy.seen == []


def test_proxy_credentials_are_sent_to_the_proxy_and_never_logged(
    proxy: Proxy, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with_credentials = proxy.url.replace("http://", "http://ops:pr0xy-secret@")
    monkeypatch.setenv("HTTPS_PROXY", with_credentials)
    monkeypatch.setenv("https_proxy", with_credentials)

    with WirayaClient("https://api.wiraya.test", KEY, timedelta(seconds=5)) as client:
        client.send([MESSAGE])

    expected = "Basic " + base64.b64encode(b"ops:pr0xy-secret").decode()
    assert proxy.credentials == [expected]
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "through the proxy http://127.0.0.1" in text
    assert "pr0xy-secret" not in text and KEY not in text


def test_a_proxy_of_an_unknown_kind_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "socks5://127.0.0.1:1080")
    monkeypatch.setenv("https_proxy", "socks5://127.0.0.1:1080")

    with pytest.raises(ValueError, match="proxy"):
        WirayaClient("https://api.wiraya.test", KEY, timedelta(seconds=5))
