"""The sandbox's HTTP answers: the `Reply` the server writes, and what servers and proxies send.

Each canned answer imitates what a real deployment sends: ASP.NET's JSON errors, an nginx
proxy's HTML pages, and `results` keyed as a Newtonsoft.Json server spells them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson

from sandbox.casing import to_camel_case

JSON_TYPE = "application/json; charset=utf-8"


@dataclass(frozen=True)
class Reply:
    """An HTTP answer; `drop` closes the connection without writing it, and a `trickle` writes
    the body a few bytes at a time spread over that long."""

    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: tuple[tuple[str, str], ...] = ()
    drop: bool = False
    trickle: timedelta = timedelta(0)
    answering: tuple[str, ...] = ()  # ids the ledger holds as being answered until it is written
    client_waiting: Callable[[], bool] | None = None  # the request's, while `answering`


def json_reply(status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """A JSON reply, compact as servers send it."""
    return Reply(status, orjson.dumps(payload), JSON_TYPE, headers)


def text_reply(status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> Reply:
    """A plain-text (or HTML) reply, as proxies and frameworks send for errors."""
    return Reply(status, text.encode(), content_type)


def results_reply(results: Mapping[str, Any], *, camel_case_keys: bool) -> Reply:
    """200 with per-message results; keys camel-cased as Newtonsoft's resolver does, on demand.

    Newtonsoft writes each dictionary entry under its camel-cased name without checking for
    collisions, so two ids that camel-case alike ("Order-1", "order-1") give one key twice.
    """
    if not camel_case_keys:
        return json_reply(200, {"results": results})
    members = b",".join(
        orjson.dumps(to_camel_case(key)) + b":" + orjson.dumps(value)
        for key, value in results.items()
    )
    return Reply(200, b'{"results":{' + members + b"}}")


def _nginx_page(status: int, title: str, heading: str | None = None) -> Reply:
    page = (
        f"<html>\r\n<head><title>{status} {title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {heading or title}</h1></center>\r\n"
        "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
    return text_reply(status, page, "text/html")


INTERNAL_ERROR = json_reply(500, {"message": "An error has occurred."})
UNAVAILABLE = text_reply(503, "The service is unavailable.")
BAD_GATEWAY = _nginx_page(502, "Bad Gateway")
TOO_LARGE = _nginx_page(413, "Request Entity Too Large")
# A proxy's 400: HTML, and worded to fool a client that looks for "too large" in any body.
PROXY_BAD_REQUEST = _nginx_page(400, "Request Header Or Cookie Too Large", "Bad Request")
FORBIDDEN = json_reply(403, {"message": "Forbidden: the caller's IP address is not whitelisted"})
INVALID_KEY = text_reply(401, "Invalid API Key")
UNSUPPORTED_MEDIA = json_reply(
    415, {"message": "the sandbox accepts application/json or text/json"}
)
BULK_LIMIT = json_reply(400, {"bulkItemLimitExceeded": True})
TOO_MANY_REQUESTS = {"message": "Too many requests"}


def bad_request(reason: str) -> Reply:
    """400 "Invalid input format" with the reason, as the API documents it."""
    return json_reply(400, {"message": f"Invalid input format: {reason}"})
