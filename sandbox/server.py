"""The sandbox's HTTP/1.1 server: keep-alive, one thread per connection, drops and slow answers."""

from __future__ import annotations

import contextlib
import logging
import math
import select
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sandbox.admin import ADMIN_PREFIX, handle_admin
from sandbox.api import API_PATH, EnqueueService, Request
from sandbox.replies import Reply, json_reply

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024  # a body larger than this is refused before it is read
TRICKLE_BYTES = 8  # a trickling answer's body goes out this many bytes at a time
API_KEY_HEADER = "X-ApiKey"  # matched case-sensitively, as Wiraya's server has done


class SandboxServer(ThreadingHTTPServer):
    """The HTTP server; `service` holds the endpoint's state, `url` is where it listens."""

    daemon_threads = True

    def __init__(self, host: str, port: int, service: EnqueueService) -> None:
        self.service = service
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        if ":" in host:  # an IPv6 address such as ::1
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        """The base URL clients use, e.g. http://127.0.0.1:8080."""
        host, port = self.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"

    def stop(self) -> None:
        """Stop serving, wake waiting requests and close every open connection."""
        self.service.stop()
        self.shutdown()
        self.server_close()
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            _hang_up(connection)

    def track(self, connection: socket.socket, *, open_: bool) -> None:
        """Remember an open connection so that `stop` can close it."""
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)


class _Handler(BaseHTTPRequestHandler):
    """Routes POSTs to the endpoint and /_sandbox/ requests to the admin endpoints."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # a reply is written in two parts; do not wait for an ACK
    server: SandboxServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, open_=True)

    def finish(self) -> None:
        self.server.track(self.connection, open_=False)
        with contextlib.suppress(OSError):  # the client went away first
            super().finish()

    def do_POST(self) -> None:
        self._serve("POST")

    def do_GET(self) -> None:
        self._serve("GET")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def _serve(self, method: str) -> None:
        body = self._read_body()
        if body is None:
            return
        try:
            reply = self._route(method, body)
        except Exception:  # a sandbox bug: answer it, keep serving
            log.exception("sandbox failed on %s %s", method, self.path)
            reply = json_reply(500, {"message": "sandbox internal error"})
        self._write(reply)

    def _route(self, method: str, body: bytes) -> Reply:
        path = self.path.split("?", 1)[0]
        if path.startswith(ADMIN_PREFIX):
            return handle_admin(self.server.service, method, self.path, body)
        if path == API_PATH and method == "POST":
            api_key = next((v for k, v in self.headers.items() if k == API_KEY_HEADER), None)
            request = Request(api_key, self.headers.get("Content-Type"), body, self._client_waiting)
            return self.server.service.handle(request)
        return json_reply(404, {"message": f"No HTTP resource was found for {method} {path}"})

    def _read_body(self) -> bytes | None:
        """The request body by Content-Length; None (and an error sent) when it cannot be read."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._write(json_reply(411, {"message": "send a Content-Length"}))
            return None
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self.close_connection = True
            self._write(json_reply(413, {"message": "bad or too large Content-Length"}))
            return None
        return self.rfile.read(length)

    def _write(self, reply: Reply) -> None:
        try:
            self._send(reply)
        finally:
            self.server.service.answered(reply)

    def _send(self, reply: Reply) -> None:
        if reply.drop:
            self.close_connection = True
            return
        try:
            self.send_response(reply.status, HTTPStatus(reply.status).phrase)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            if reply.trickle:
                self._trickle(reply)
            else:
                self.wfile.write(reply.body)
        except OSError:
            self.close_connection = True  # the client timed out or hung up; nothing to tell it
            self.server.service.stats.add(hung_up=1)

    def _trickle(self, reply: Reply) -> None:
        """Write the body in pieces of TRICKLE_BYTES spread evenly over `reply.trickle`."""
        pieces = max(1, math.ceil(len(reply.body) / TRICKLE_BYTES))
        pause = reply.trickle.total_seconds() / pieces
        self.wfile.flush()  # the headers go out at once; only the body trickles
        for start in range(0, len(reply.body), TRICKLE_BYTES):
            if self._client_left_within(pause):
                raise ConnectionAbortedError("the client hung up on a trickling answer")
            self.wfile.write(reply.body[start : start + TRICKLE_BYTES])
            self.wfile.flush()

    def _client_left_within(self, seconds: float) -> bool:
        """Wait `seconds`, or less if the client closes its end (or the server stops) meanwhile.

        Noticing the close at once, not at the next failed write, keeps the ledger's "being
        answered" exact for a client that gives up.
        """
        readable, _, _ = select.select([self.connection], [], [], seconds)
        if not readable:
            return False
        try:
            if self.connection.recv(1, socket.MSG_PEEK) == b"":
                return True
        except OSError:
            return True
        return self.server.service.wait(seconds)  # bytes of another request: just wait

    def _client_waiting(self) -> bool:
        """Whether the client still holds this connection open: it has neither closed nor reset it.

        Asked from other threads (a resend's): it peeks without waiting and reads nothing.
        """
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return True
            peeked: bytes = self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            return peeked != b""
        except BlockingIOError:
            return True
        except (OSError, ValueError):  # reset, or already closed on this side
            return False

    def version_string(self) -> str:
        return "wiraya-sandbox"

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.address_string(), *args)


def _hang_up(connection: socket.socket) -> None:
    """End a connection's reads and writes; its own thread then closes it (no fd reuse race)."""
    with contextlib.suppress(OSError):  # already closed
        connection.shutdown(socket.SHUT_RDWR)


def start(service: EnqueueService, host: str = "127.0.0.1", port: int = 0) -> SandboxServer:
    """Bind and serve on a background thread; call `stop()` on the result to end it."""
    server = SandboxServer(host, port, service)
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), daemon=True, name="sandbox"
    )
    thread.start()
    return server
