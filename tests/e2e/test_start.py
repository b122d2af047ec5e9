"""`celery -A worker worker` starts without the rounds the outbox does not need.

Mingle (a start-up round asking every other worker for its revoked tasks, then waiting a
second for answers) and gossip (each worker following every other worker's events) serve
nothing here: nothing is revoked, and a wake-up delivered twice is harmless. Heartbeats stay,
so Flower still lists the workers, and remote control stays, so `celery inspect` answers.
The time they cost is measured by bench/bench_startup.py. `outbox-celery` (Celery's worker and
beat commands without the `celery` command's plugins) runs the same worker and beat.
"""

from __future__ import annotations

import subprocess

from tests.e2e.harness import CELERY, OUTBOX_CELERY, Stack, project_messages


def test_the_worker_starts_without_mingle_or_gossip_and_still_answers(stack: Stack) -> None:
    stack.start_sandbox()
    worker = stack.start_worker(concurrency=1, command=CELERY)  # the `celery` command still works
    log = worker.log.read_text()
    assert "mingle" not in log, log
    done = subprocess.run(
        [CELERY, "-A", "worker", "inspect", "ping", "--timeout", "5"],
        env=stack.worker_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and "pong" in done.stdout, done.stdout + done.stderr
    stack.start_beat(command=CELERY)
    stack.enqueue(project_messages("start", 10))
    stack.wait_all_final(10, timeout=30)


def test_outbox_celery_runs_the_worker_and_beat_that_send_every_message(stack: Stack) -> None:
    stack.start_sandbox()
    stack.start_worker(concurrency=2, command=OUTBOX_CELERY)
    stack.start_beat(command=OUTBOX_CELERY)
    stack.enqueue(project_messages("launch", 20))
    stack.wait_all_final(20, timeout=30)
    assert stack.count("status = 'accepted'") == 20
