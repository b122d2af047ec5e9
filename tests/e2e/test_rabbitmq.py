"""RabbitMQ as the broker: real celery worker and beat on a vhost of their own, a worker killed.

Needs the RabbitMQ on this machine (127.0.0.1:5672, guest/guest) and `rabbitmqctl` to create
a vhost per test, deleted afterwards. Skipped with the reason when either is missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from itertools import count

import pytest
from kombu import Connection
from kombu.exceptions import ChannelError

from tests.conftest import service_missing
from tests.e2e.harness import (
    Stack,
    accepted_in_summaries,
    assert_recovered,
    assert_verdict,
    check_every_message,
    flower_dispatches,
    kill_a_worker_mid_batch,
    project_messages,
    wait_for,
)

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]

AMQP_HOST, AMQP_PORT = "127.0.0.1", int(os.environ.get("OUTBOX_TEST_AMQP_PORT", "5672"))
FLOWER_LOGIN = "ops:rabbit-test-password"
QUEUE = "outbox"  # the app's task queue (worker.runtime.celery_app.QUEUE, which reads settings)
_vhosts = count()


def _rabbitmqctl(*args: str) -> None:
    binary = shutil.which("rabbitmqctl") or shutil.which("rabbitmqctl", path="/usr/sbin")
    if binary is None:
        raise FileNotFoundError("rabbitmqctl is not installed (Debian package rabbitmq-server)")
    done = subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise OSError(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip() or done.stdout}")


@pytest.fixture
def amqp_url() -> Iterator[str]:
    """A fresh vhost on the machine's RabbitMQ for one test, guest allowed everything in it."""
    try:
        socket.create_connection((AMQP_HOST, AMQP_PORT), timeout=2).close()
        vhost = f"outbox-test-{os.getpid()}-{next(_vhosts)}"
        _rabbitmqctl("add_vhost", vhost)
    except OSError as error:
        service_missing("RabbitMQ", error)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
def rabbit(stack: Stack, amqp_url: str) -> Stack:
    """The stack with RabbitMQ as its broker instead of its Redis."""
    stack.broker = amqp_url
    return stack


def test_a_worker_killed_mid_run_on_rabbitmq_loses_nothing(rabbit: Stack) -> None:
    total = 1_000
    verdict, _ = kill_a_worker_mid_batch(rabbit, "rabbit-kill", total)
    assert_recovered(verdict, total)
    # The tick counts the dispatches waiting in the queue through RabbitMQ too.
    assert "could not count queued tasks" not in rabbit.outbox_logs()


def test_two_workers_drain_through_rabbitmq_and_flower_sees_every_batch(rabbit: Stack) -> None:
    admin = rabbit.start_sandbox("--latency-ms", "20")
    flower = rabbit.start_flower(FLOWER_LOGIN)  # task events travel over RabbitMQ too
    total = 1_500
    rabbit.enqueue(project_messages("rabbit", total))
    rabbit.start_outbox(workers=2)
    rabbit.wait_all_final(total, timeout=90)

    verdict = check_every_message(rabbit.rows(), admin.ledger())
    assert_verdict(verdict)
    assert verdict.accepted == total
    wait_for(
        lambda: accepted_in_summaries(flower_dispatches(flower, FLOWER_LOGIN)) == total,
        timeout=30,
        what="Flower to show every accepted message in a dispatch summary",
    )
    assert "could not count queued tasks" not in rabbit.outbox_logs()


def _queue_exists(amqp_url: str, name: str) -> bool:
    """Whether the vhost has queue ``name`` (a passive declare, on a connection of its own)."""
    with Connection(amqp_url, connect_timeout=5) as connection:
        try:
            connection.default_channel.queue_declare(queue=name, passive=True)
        except ChannelError:
            return False
    return True


def test_workers_start_after_beat_has_queued_wake_ups(rabbit: Stack, amqp_url: str) -> None:
    """Beat may declare the queue first (a wake-up on insert, before any worker runs); the
    workers' own declaration of it must agree, or RabbitMQ refuses them."""
    admin = rabbit.start_sandbox()
    rabbit.start_beat()
    rabbit.enqueue(project_messages("beat-first", 10))  # heard by beat's LISTEN: a wake-up
    wait_for(lambda: _queue_exists(amqp_url, QUEUE), timeout=30, what="beat to declare the queue")
    rabbit.start_worker()
    rabbit.wait_all_final(10, timeout=60)
    assert_verdict(check_every_message(rabbit.rows(), admin.ledger()))
    assert "PRECONDITION_FAILED" not in rabbit.outbox_logs()
