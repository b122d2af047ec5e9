"""`outbox receiver`: the receiver's application served by uvicorn on a socket bound first.

Plain HTTP: put a TLS-terminating proxy in front of it (Wiraya calls an HTTPS endpoint). On
SIGTERM or Ctrl-C uvicorn stops accepting, lets requests in progress finish (they are answered
only once committed) for up to GRACE, then exits. Facing the internet, it holds no connection
whose request does not arrive whole within OUTBOX_CALLBACK_READ_TIMEOUT_SECONDS
(`worker.reports.protocol`), and serves at most OUTBOX_CALLBACK_MAX_CONNECTIONS connections
at once (past them a request is answered 503).
"""

from __future__ import annotations

import logging
import signal
import socket
import sys

import uvicorn
from starlette.applications import Starlette

from worker.reports.app import CALLBACK_PATH, HEALTH_PATH
from worker.reports.protocol import with_read_timeout
from worker.settings import CallbackSettings

GRACE_SECONDS = 30
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0 picks one); OSError when it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def server_config(app: Starlette, settings: CallbackSettings, **options: object) -> uvicorn.Config:
    """uvicorn's configuration for the receiver: the read deadline and the connection limit."""
    return uvicorn.Config(
        app,
        http=with_read_timeout(settings.callback_read_timeout.total_seconds()),
        limit_concurrency=settings.callback_max_connections,
        lifespan="off",
        server_header=False,
        **options,  # type: ignore[arg-type]
    )


def quiet_health_checks(record: logging.LogRecord) -> bool:
    """uvicorn's access log without the answered health checks (a container probes every few
    seconds): a failing one, and every other request, is still logged."""
    args = record.args if isinstance(record.args, tuple) else ()
    answered = len(args) == 5 and args[2] == HEALTH_PATH and int(str(args[4])) < 400
    return not answered


def serve(app: Starlette, sock: socket.socket, settings: CallbackSettings) -> int:
    """Serve ``app`` on ``sock`` until SIGTERM or Ctrl-C; returns the exit code."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    logging.getLogger("uvicorn.access").addFilter(quiet_health_checks)
    print(
        f"receiver listening on http://{shown}:{port} (POST {CALLBACK_PATH}, GET {HEALTH_PATH})",
        flush=True,
    )
    config = server_config(
        app,
        settings,
        timeout_graceful_shutdown=GRACE_SECONDS,
        log_config=None,  # the process's logging, set above
    )
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again under the handler
    # it found: a handler that does nothing makes that a clean exit (0), as for `outbox metrics`.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("receiver stopped", file=sys.stderr)
    return 0
