"""Warm shutdown right after start: `docker stop` a moment after the worker starts, mid-burst.

Dispatch tasks are queued before the worker starts (a burst, as after a Redis restart or a
deploy), and the worker gets SIGTERM (what `docker stop` sends to the container's first process)
within a second of its start, at a different moment each round: while it imports, starts its
pool, connects, or has just begun the burst. It runs as in the image: under the Dockerfile's
ENTRYPOINT (tini), which forwards the signal to the worker's main process only. Before Celery
has installed its handlers Python would die of the signal (or, as PID 1 in a container, ignore
it until Docker's SIGKILL); each time it must exit 0 within the grace period compose gives it,
and in the end every message is still accepted once (or resent only where its outcome was
unknown).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest
from celery import Celery

from tests.conftest import ROOT, service_missing
from tests.e2e.harness import (
    OUTBOX_CELERY,
    Expect,
    Stack,
    assert_verdict,
    check_every_message,
    project_messages,
)

BURST = 40  # dispatch tasks queued before the worker starts
# When `docker stop` comes: seconds after the start (Celery may still be importing) or the
# moment the worker logs a line (ready; the first dispatch of the burst under way).
MOMENTS: list[float | str] = [
    0.1,
    0.3,
    0.5,
    0.7,
    1.0,
    r"ready\.",
    r"Task outbox\.dispatch\[.*\] received",
]
# Compose's stop_grace_period is the request deadline plus the dispatch budget and margin:
# here WIRAYA_TIMEOUT_SECONDS=2 (harness), so the same rule gives 2 + 2 + 10 s.
GRACE = 14.0


def image_entrypoint() -> list[str]:
    """The Dockerfile's ENTRYPOINT (exec form), found on this machine."""
    found = re.search(r"^ENTRYPOINT (\[.*\])$", (ROOT / "Dockerfile").read_text(), re.M)
    assert found is not None, "the image needs an init that forwards SIGTERM (ENTRYPOINT)"
    entrypoint = list(json.loads(found[1]))
    binary = shutil.which(entrypoint[0])
    if binary is None:
        service_missing(entrypoint[0], FileNotFoundError("not on PATH (Debian package tini)"))
    return [binary, *entrypoint[1:]]


def queue_burst(stack: Stack, count: int) -> None:
    app = Celery(broker=stack.broker_url)
    try:
        for _ in range(count):
            app.send_task("outbox.dispatch", queue="outbox")
    finally:
        app.close()


@pytest.mark.timeout(300)
def test_sigterm_within_a_second_of_start_exits_0_within_the_grace_period(stack: Stack) -> None:
    stack.start_sandbox("--latency-ms", "50")
    total = 3_000
    stack.enqueue(project_messages("stop", total))
    argv = [*image_entrypoint(), OUTBOX_CELERY, "-A", "worker", "worker", "-l", "info"]
    argv += ["--concurrency", "2", "-n", "w@%h"]
    exits = []
    for round_number, moment in enumerate(MOMENTS):
        queue_burst(stack, BURST)
        env = stack.worker_env(TINI_SUBREAPER="1")  # as PID 1: orphans are its own
        worker = stack._service(f"worker-{round_number}", argv, env)
        worker.start()
        assert worker.process is not None
        if isinstance(moment, str):
            worker.wait_for_log(moment)
        else:
            time.sleep(moment)
        os.kill(worker.process.pid, signal.SIGTERM)  # to the first process, as Docker does
        started = time.monotonic()
        try:
            code = worker.process.wait(timeout=GRACE)
        except subprocess.TimeoutExpired:
            code = None
        exits.append((moment, code, round(time.monotonic() - started, 1)))
        worker.kill()
    assert all(code == 0 for _, code, _ in exits), f"(moment, exit code, seconds): {exits}"

    stack.start_outbox()
    stack.wait_all_final(total, timeout=120)
    verdict = check_every_message(
        stack.rows(), stack.admin.ledger(), lambda _: Expect(resend_ok=True)
    )
    assert_verdict(verdict)
