"""Delivery reports pushed like Wiraya's communication callbacks: batched, with basic auth.

Every message the sandbox accepts gets a report, DELIVERED, or NOT_DELIVERED for the test
recipient ending in 0000007 (`sandbox.recipients`). Reports are queued and POSTed as one JSON array
every ``interval`` to ``url``, in the body of Wiraya's template
(docs/delivery-reports.md#wirayas-side-the-callback-template: ``trackingId``, ``status``,
``recipient``, ``doneAt``, plus ``clientMessageId``). What is not answered 2xx (refused, an error,
no answer) is pushed again in the next round. Like Wiraya, whose ordering and retries are not
documented, it also pushes some reports twice
(``p_repeat``) and some before it answers the send they belong to (``p_early``: the request
that enqueued the message waits until that push is answered).
"""

from __future__ import annotations

import base64
import logging
import random
import threading
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from sandbox.recipients import delivery_status

log = logging.getLogger(__name__)

PUSH_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class Pushing:
    """Where and how the sandbox pushes delivery reports."""

    url: str
    login: str  # user:password, sent as HTTP basic auth
    interval: timedelta = timedelta(seconds=1)
    p_repeat: float = 0.05  # chance that a report is pushed a second time, in a later round
    p_early: float = 0.05  # chance that a report is pushed before the send is answered
    max_batch: int = 1000

    def __post_init__(self) -> None:
        for name in ("p_repeat", "p_early"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: a probability between 0 and 1")
        if self.interval <= timedelta(0) or self.max_batch < 1:
            raise ValueError("interval and max_batch: more than 0")
        if ":" not in self.login:
            raise ValueError("login: user:password")


class ReportPusher:
    """Queues a report per accepted message and pushes the queue every interval, retrying."""

    def __init__(self, pushing: Pushing, *, seed: int | None = 0) -> None:
        self.pushing = pushing
        self._random = random.Random(seed)
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._authorization = "Basic " + base64.b64encode(pushing.login.encode()).decode()
        self.counts: Counter[str] = Counter()  # reports pushed, early, repeated; answers by code

    def start(self) -> ReportPusher:
        """Push in a background thread until `stop`."""
        self._thread = threading.Thread(target=self._run, daemon=True, name="sandbox-reports")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=PUSH_TIMEOUT_SECONDS + 1)

    @property
    def pending(self) -> int:
        """Reports waiting for their next push."""
        with self._lock:
            return len(self._pending)

    def accepted(self, messages: list[tuple[str, str, str]], now: datetime) -> None:
        """Report on (clientMessageId, recipient, trackingId) just accepted; runs before the
        send is answered, so early reports reach the receiver first."""
        early: list[dict[str, Any]] = []
        later: list[dict[str, Any]] = []
        with self._lock:
            for client_message_id, recipient, tracking_id in messages:
                report = {
                    "trackingId": tracking_id,
                    "status": delivery_status(recipient),
                    "recipient": recipient,
                    "doneAt": now.isoformat().replace("+00:00", "Z"),
                    "clientMessageId": client_message_id,
                }
                (early if self._random.random() < self.pushing.p_early else later).append(report)
                if self._random.random() < self.pushing.p_repeat:
                    later.append(dict(report))
                    self.counts["repeated"] += 1
            self._pending.extend(later)
        if early:
            self.counts["early"] += len(early)
            if not self._push(early):
                with self._lock:
                    self._pending.extend(early)

    def _run(self) -> None:
        while not self._stop.wait(self.pushing.interval.total_seconds()):
            self.flush()

    def flush(self) -> None:
        """Push what is pending, a batch at a time, until a push fails or nothing is left."""
        while True:
            with self._lock:
                batch = self._pending[: self.pushing.max_batch]
                del self._pending[: self.pushing.max_batch]
            if not batch:
                return
            if not self._push(batch):
                with self._lock:
                    self._pending[:0] = batch  # first in line for the next round
                return

    def _push(self, reports: list[dict[str, Any]]) -> bool:
        """POST one batch; True when it was answered 2xx."""
        request = urllib.request.Request(
            self.pushing.url,
            data=orjson.dumps(reports),
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": self._authorization},
        )
        try:
            with urllib.request.urlopen(request, timeout=PUSH_TIMEOUT_SECONDS) as answer:
                code = answer.status
        except urllib.error.HTTPError as error:
            error.close()
            code = error.code
        except OSError as error:  # refused, reset, timed out: pushed again next round
            self.counts["unanswered"] += 1
            log.warning("report push to %s failed: %s", self.pushing.url, error)
            return False
        self.counts[f"answered {code}"] += 1
        if 200 <= code < 300:
            self.counts["pushed"] += len(reports)
            return True
        log.warning("report push to %s answered %d: pushed again later", self.pushing.url, code)
        return False
