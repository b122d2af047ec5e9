"""Bulk slots in a real worker: all but one pool process may hold one, and a killed one's is free.

A worker of three pool processes drains a bulk backlog: its slot folder holds two slots, a pool
process killed mid-drain stops nothing (the drain ends, every message accepted under its one
id), and the folder is gone when the worker stops. That the kernel frees a killed process's
slot at once is shown in tests/integration/dispatch/test_bulk_slots.py.
"""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import text

from models import NewMessage, Priority, SMSProject
from tests.e2e.harness import Stack, ordinary_recipient
from worker.ops.processes import wait_for

BULK = 4_000


def bulk_messages(count: int) -> list[NewMessage]:
    return [
        NewMessage.create(
            client_message_id=f"bulk-{number:06d}",
            recipient=ordinary_recipient(number),
            content=SMSProject(project_id=123, placeholders=["John", f"Order #{number}"]),
            priority=Priority.BULK,
        )
        for number in range(count)
    ]


def accepted(stack: Stack) -> int:
    with stack.engine.connect() as connection:
        query = "SELECT count(*) FROM outbox_messages WHERE status = 'accepted'"
        return int(connection.scalar(text(query)) or 0)


@pytest.mark.timeout(240)
def test_a_worker_of_three_processes_has_two_bulk_slots_that_no_kill_keeps(stack: Stack) -> None:
    stack.start_sandbox("--latency-ms", "100")
    stack.enqueue(bulk_messages(BULK))
    worker = stack.start_worker(3, OUTBOX_BATCH_SIZE="50")
    folder = Path(tempfile.gettempdir()) / f"wiraya-outbox-bulk-{worker.pid}"
    assert folder.is_dir()
    stack.start_beat()

    wait_for(lambda: accepted(stack) >= 200, timeout=60, what="the drain to begin")
    assert sorted(path.name for path in folder.iterdir()) == ["slot-0", "slot-1"]
    pool = [pid for pid in worker.tree() if pid != worker.pid]
    os.kill(pool[0], signal.SIGKILL)  # mid-batch, perhaps holding a slot

    wait_for(lambda: accepted(stack) == BULK, timeout=180, what="the whole backlog")
    received = stack.admin.ledger()
    assert len(received) == BULK
    stack.stop_outbox()
    assert not folder.exists()
