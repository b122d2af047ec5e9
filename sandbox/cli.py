"""`outbox sandbox` / `python -m sandbox`: run the Wiraya sandbox with faults chosen by flags."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from datetime import timedelta
from pathlib import Path
from types import FrameType

from sandbox.api import API_PATH, EnqueueService
from sandbox.faults import Faults, Validation
from sandbox.reports import Pushing, ReportPusher
from sandbox.server import SandboxServer


def build_parser(prog: str = "outbox sandbox") -> argparse.ArgumentParser:
    """The sandbox's command-line options; every fault can also be changed at run time."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="A local stand-in for Wiraya's EnqueueCommunications API, with faults. "
        "Change faults while it runs: POST /_sandbox/faults with a JSON object of the fault "
        "settings below (durations as *_ms); GET /_sandbox/faults, /_sandbox/ledger and "
        "/_sandbox/stats show them (README, Sandbox).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks one)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault dice (default 0)")
    parser.add_argument(
        "--api-key",
        action="append",
        help="an X-ApiKey accepted, the only one unless repeated or given as a comma-separated "
        "list (one per account; default: any non-empty key is accepted); PUT "
        "/_sandbox/api-key changes them at run time, as a key rotation at Wiraya",
    )
    parser.add_argument(
        "--ledger-file",
        type=Path,
        help="keep the ledger in this JSON file: read at start, written at a clean stop, so "
        "that a restart remembers every tracking id given",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    faults = parser.add_argument_group("faults (all off by default)")
    faults.add_argument("--latency-ms", type=float, default=0, help="delay before doing the work")
    faults.add_argument("--p500", type=float, default=0, help="probability of a JSON 500")
    faults.add_argument("--p503", type=float, default=0, help="probability of a text 503")
    faults.add_argument("--p502-html", type=float, default=0, help="probability of an HTML 502")
    faults.add_argument(
        "--p400-html", type=float, default=0, help="probability of a proxy's HTML 400 page"
    )
    faults.add_argument("--outage", action="store_true", help="answer every request with 503")
    faults.add_argument("--forbidden", action="store_true", help="answer every request with 403")
    faults.add_argument(
        "--slow-after-work-ms", type=float, default=0, help="answer this late, after the work"
    )
    faults.add_argument("--p-slow", type=float, default=1.0, help="probability of a slow answer")
    faults.add_argument(
        "--p-drop", type=float, default=0, help="probability of closing without an answer"
    )
    faults.add_argument("--p-bad-json", type=float, default=0, help="probability of a cut 200 body")
    faults.add_argument(
        "--trickle-ms",
        type=float,
        default=0,
        help="after the work, write the answer's body a few bytes at a time over this long",
    )
    faults.add_argument(
        "--p-trickle", type=float, default=1.0, help="probability of a trickling answer"
    )
    faults.add_argument("--rate-limit", type=float, metavar="RPS", help="429 above this rate")
    faults.add_argument("--retry-after", type=float, metavar="S", help="Retry-After on 429s")
    faults.add_argument(
        "--max-batch", type=int, metavar="N", help='400 {"bulkItemLimitExceeded": true} above N'
    )
    faults.add_argument("--max-body-bytes", type=int, metavar="B", help="413 for larger bodies")
    faults.add_argument(
        "--validation",
        choices=[mode.value for mode in Validation],
        default=Validation.REQUEST.value,
        help="an invalid message fails the whole request (400) or only its own result",
    )
    faults.add_argument(
        "--camel-case-keys",
        action="store_true",
        help="key results by clientMessageId camel-cased, as a Newtonsoft.Json server does",
    )
    pushing = parser.add_argument_group("delivery reports (sandbox/reports.py), off by default")
    pushing.add_argument(
        "--callback-url", help="push reports to this URL, like Wiraya's communication callbacks"
    )
    pushing.add_argument(
        "--callback-auth",
        default=os.environ.get("OUTBOX_CALLBACK_AUTH"),
        help="user:password to push with (default: $OUTBOX_CALLBACK_AUTH)",
    )
    pushing.add_argument("--callback-interval", type=float, default=1.0, help="seconds (default 1)")
    pushing.add_argument("--p-callback-repeat", type=float, default=0.05, help="pushed twice")
    pushing.add_argument("--p-callback-early", type=float, default=0.05, help="before the answer")
    return parser


def pushing_from(args: argparse.Namespace) -> Pushing | None:
    """The delivery-report pushing the flags ask for (None without --callback-url)."""
    if not args.callback_url:
        return None
    if not args.callback_auth:
        raise ValueError("--callback-url needs --callback-auth user:password")
    return Pushing(
        url=args.callback_url,
        login=args.callback_auth,
        interval=timedelta(seconds=args.callback_interval),
        p_repeat=args.p_callback_repeat,
        p_early=args.p_callback_early,
    )


def faults_from(args: argparse.Namespace) -> Faults:
    """The Faults the parsed flags ask for; ValueError when a value is out of range."""
    return Faults(
        latency=timedelta(milliseconds=args.latency_ms),
        p500=args.p500,
        p503=args.p503,
        p502_html=args.p502_html,
        p400_html=args.p400_html,
        outage=args.outage,
        forbidden=args.forbidden,
        slow_after_work=timedelta(milliseconds=args.slow_after_work_ms),
        p_slow=args.p_slow,
        p_drop=args.p_drop,
        p_bad_json=args.p_bad_json,
        trickle=timedelta(milliseconds=args.trickle_ms),
        p_trickle=args.p_trickle,
        rate_limit=args.rate_limit,
        retry_after=None if args.retry_after is None else timedelta(seconds=args.retry_after),
        max_batch=args.max_batch,
        max_body_bytes=args.max_body_bytes,
        validation=Validation(args.validation),
        camel_case_keys=args.camel_case_keys,
    )


def main(argv: list[str] | None = None, *, prog: str = "outbox sandbox") -> int:
    """Run the sandbox in the foreground until interrupted; 0 on a clean stop, 2 on bad flags."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        faults = faults_from(args)
        pushing = pushing_from(args)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    pusher = ReportPusher(pushing, seed=args.seed).start() if pushing else None
    service = EnqueueService(
        faults, seed=args.seed, api_key=_accepted_keys(args.api_key), reports=pusher
    )
    if args.ledger_file is not None:
        service.ledger.load(args.ledger_file)
    try:
        server = SandboxServer(args.host, args.port, service)
    except OSError as exc:
        print(f"sandbox: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    _stop_on_sigterm(server)
    print(
        f"sandbox listening on {server.url} (POST {API_PATH}; admin under /_sandbox/)", flush=True
    )
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.service.stop()
        server.server_close()
        if args.ledger_file is not None:
            server.service.ledger.save(args.ledger_file)
    return 0


def _stop_on_sigterm(server: SandboxServer) -> None:
    """SIGTERM stops serving cleanly, like Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)


def _accepted_keys(given: list[str] | None) -> list[str] | None:
    """Every --api-key, each possibly a comma-separated list; None: any key is accepted."""
    if not given:
        return None
    return [key.strip() for item in given for key in item.split(",") if key.strip()]
