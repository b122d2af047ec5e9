"""Bulk slots: a pool process without one takes a tenth of a bulk batch and comes back soon.

Two dispatchers stand for two pool processes of a worker with one slot (a pool of two). The
slot is a real `flock`: a process killed while holding it frees it at once.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

from sqlalchemy import text

from tests.integration.dispatch.harness import Outbox
from tests.integration.dispatch.test_lanes import insert
from worker.dispatch.bulk_slots import BulkSlots


def slots(directory: Path) -> BulkSlots:
    return BulkSlots(directory, 1)  # the slots of a worker of two pool processes


def bulk_backlog(outbox: Outbox, count: int, prefix: str = "bulk") -> None:
    for number in range(count):
        insert(outbox, f"{prefix}-{number:03d}", priority=2)


def test_a_process_without_a_slot_takes_a_tenth_of_a_bulk_batch_and_keeps_going(
    outbox: Outbox, tmp_path: Path
) -> None:
    bulk_backlog(outbox, 60)
    holder = slots(tmp_path)
    assert holder.limit(20) == 20  # another process's batch of bulk rows is under way
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=20)
    dispatcher.bulk_slots = slots(tmp_path)

    first = dispatcher.dispatch_once()

    # Two rows, counted as a full batch: the dispatch goes on claiming (each claim looks at
    # the urgent lane first) instead of handing over after one short batch.
    assert (first.accepted, first.full) == (2, True)
    going_on = dispatcher.dispatch()
    assert going_on.batches > 1
    assert going_on.accepted == 2 * going_on.batches
    while dispatcher.dispatch().accepted:  # the rest of the 60 (a dispatch hands over at 2 s)
        pass
    bulk_backlog(outbox, 30, prefix="more")
    outbox.clock.catch_up()
    holder.release()
    assert dispatcher.dispatch_once().accepted == 20  # the slot is free: a full batch again


def test_normal_rows_are_not_held_to_the_share(outbox: Outbox, tmp_path: Path) -> None:
    bulk_backlog(outbox, 30)
    for number in range(5):
        insert(outbox, f"normal-{number}", priority=1)
    holder = slots(tmp_path)
    holder.limit(20)
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=20)
    dispatcher.bulk_slots = slots(tmp_path)

    summary = dispatcher.dispatch_once()

    assert dict(summary.by_priority) == {"normal": 5, "bulk": 2}


def test_a_batch_of_bulk_rows_holds_the_slot_until_it_is_recorded_only(
    outbox: Outbox, tmp_path: Path
) -> None:
    bulk_backlog(outbox, 30)
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=10)
    dispatcher.bulk_slots = slots(tmp_path)

    assert dispatcher.dispatch_once().accepted == 10

    other = slots(tmp_path)
    assert other.limit(10) == 10  # released with the record: the next claim may be anyone's
    with outbox.engine.connect() as connection:
        sending = connection.scalar(
            text("SELECT count(*) FROM outbox_messages WHERE status = 'sending'")
        )
    assert sending == 0


def test_a_process_holding_no_bulk_rows_holds_no_slot(outbox: Outbox, tmp_path: Path) -> None:
    for number in range(5):
        insert(outbox, f"normal-{number}", priority=1)
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=10)
    own = dispatcher.bulk_slots = slots(tmp_path)
    own.limit(10)  # taken before the claim, as every claim does

    assert dispatcher.dispatch_once().accepted == 5
    assert slots(tmp_path).limit(10) == 10


def _hold_until_killed(directory: Path, ready: multiprocessing.synchronize.Event) -> None:
    held = BulkSlots(directory, 1)
    held.limit(500)
    ready.set()
    signal.pause()


def test_the_slot_of_a_killed_process_is_free_at_once(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    child = context.Process(target=_hold_until_killed, args=(tmp_path, ready))
    child.start()
    assert ready.wait(10)
    mine = BulkSlots(tmp_path, 1)
    assert mine.limit(500) == 50  # the child holds the one slot

    os.kill(child.pid or 0, signal.SIGKILL)
    child.join(10)

    assert mine.limit(500) == 500


def test_a_forked_child_opens_its_own_slot_files(tmp_path: Path) -> None:
    parent = BulkSlots(tmp_path, 1)
    assert parent.limit(100) == 100  # the parent holds the slot, then forks
    context = multiprocessing.get_context("fork")
    result = context.Queue()
    child = context.Process(target=lambda: result.put(parent.limit(100)))
    child.start()
    child.join(10)

    # The inherited descriptor would share the parent's lock: the child opened its own,
    # and found the one slot taken.
    assert result.get(timeout=5) == 10


def test_one_pool_process_has_no_slots_to_share() -> None:
    alone = BulkSlots.for_worker(1)
    assert alone.limit(500) == 500
    assert BulkSlots.for_worker(4).count == 3
