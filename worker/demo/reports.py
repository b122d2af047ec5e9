"""The demo's delivery part: `outbox receiver` as a process, the sandbox pushing reports to it,
and the count of delivered and not delivered messages at the end.
"""

from __future__ import annotations

import secrets
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine, func, select

from models import NON_FINAL_STATUSES, DeliveryStatus, Status
from models.outbox import outbox_messages as outbox
from sandbox.reports import Pushing, ReportPusher
from worker.ops.processes import Child

PUSH_INTERVAL = timedelta(milliseconds=300)
DELIVERY_TIMEOUT = timedelta(seconds=20)


@dataclass(frozen=True)
class Receiving:
    """Where the demo's receiver listens and the login the sandbox pushes with."""

    port: int
    login: str

    @classmethod
    def choose(cls) -> Receiving:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        return cls(port, f"demo:{secrets.token_hex(12)}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/wiraya/callbacks"

    def pushing(self) -> Pushing:
        """Pushed often, some twice and some before the send is answered, as Wiraya may."""
        return Pushing(self.url, self.login, interval=PUSH_INTERVAL, p_repeat=0.05, p_early=0.05)

    def start(self, children: list[Child], environment: dict[str, str], root: Path) -> None:
        """`outbox receiver` as a child process of the demo (on the demo's database), stopped
        with the demo's other children."""
        command = [sys.executable, "-m", "worker.ops.cli", "receiver", "--port", str(self.port)]
        login = {**environment, "OUTBOX_CALLBACK_AUTH": self.login}
        receiver = Child("receiver", command, root / "receiver.log", login, root)
        children.append(receiver.start())


@dataclass(frozen=True)
class Delivery:
    """Accepted messages by what their reports say."""

    delivered: int
    not_delivered: int
    waiting: int  # no final report yet

    def line(self, pusher: ReportPusher | None) -> str:
        pushed = ""
        if pusher is not None:
            counts = pusher.counts
            pushed = (
                f" ({counts['pushed']:,} reports pushed: {counts['early']:,} before the send "
                f"was answered, {counts['repeated']:,} twice)"
            )
        waiting = f", {self.waiting:,} waiting for a report" if self.waiting else ""
        shown = f"{self.delivered:,} delivered, {self.not_delivered:,} not delivered"
        return shown + waiting + pushed

    def as_expected(self, accepted: int, undelivered: int) -> bool:
        """Every accepted message delivered but the ``undelivered`` test recipients'."""
        return (self.delivered, self.not_delivered) == (accepted - undelivered, undelivered)


def delivery(engine: Engine) -> Delivery:
    final = outbox.c.delivery_status.not_in(NON_FINAL_STATUSES)
    statement = select(
        func.count().filter(outbox.c.delivery_status == DeliveryStatus.DELIVERED),
        func.count().filter(outbox.c.delivery_status == DeliveryStatus.NOT_DELIVERED),
        func.count().filter(outbox.c.delivery_status.is_(None) | ~final),
    ).where(outbox.c.status == Status.ACCEPTED)
    with engine.begin() as connection:
        delivered, not_delivered, waiting = connection.execute(statement).one()
    return Delivery(int(delivered), int(not_delivered), int(waiting))


def await_delivery(engine: Engine, check: Callable[[], None]) -> Delivery:
    """Wait until every accepted message has a final report (or the timeout); the counts.
    ``check`` raises when a child process died."""
    deadline = time.monotonic() + DELIVERY_TIMEOUT.total_seconds()
    while True:
        check()
        outcome = delivery(engine)
        if outcome.waiting == 0 or time.monotonic() > deadline:
            return outcome
        time.sleep(0.2)
