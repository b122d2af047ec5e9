"""The record reads its results once, whatever plan PostgreSQL picks for it.

A record that joined its rows with a record set built from its parameter could be planned
with the table outside and the record set rebuilt for every row: quadratic in the batch, and
a prepared statement keeps such a plan. Here the planner is pushed to the worst orders it
has (no hash or merge joins, no index scans): no node of the plan may handle more than a few
rows per batch row, in all its loops.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from models import Status
from models.databases import POSTGRESQL
from models.databases.postgresql import RECORD
from tests.integration.dispatch.harness import Outbox
from worker.dispatch.record import RowResult, record_parameters

TOKEN = 4242
BATCH = 200


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    return [plan, *(node for child in plan.get("Plans", []) for node in _nodes(child))]


def test_the_record_reads_its_results_once_whatever_the_plan(pg_outbox: Outbox) -> None:
    pg_outbox.enqueue_ordinary(BATCH)
    with pg_outbox.engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE outbox_messages SET status = 'sending', locked_until = updated_at, "
                "claim_token = :token"
            ),
            {"token": TOKEN},
        )
        connection.execute(text("ANALYZE outbox_messages"))
        ids = list(connection.scalars(text("SELECT id FROM outbox_messages")))
    results = [RowResult(id, Status.ACCEPTED, 1, tracking_id=f"{id:032x}") for id in ids]
    parameters = record_parameters(POSTGRESQL, results, token=TOKEN, now=pg_outbox.clock())

    with pg_outbox.engine.connect() as connection:
        for setting in ("hashjoin", "mergejoin", "indexscan", "bitmapscan"):
            connection.execute(text(f"SET LOCAL enable_{setting} = off"))
        explained = connection.scalar(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {RECORD}"), parameters)
        connection.rollback()

    nodes = _nodes(explained[0]["Plan"])
    assert nodes[0]["Actual Rows"] == BATCH  # every row written
    for node in nodes[1:]:
        handled = node["Actual Rows"] * node["Actual Loops"]
        handled += node.get("Rows Removed by Join Filter", 0)
        assert handled <= 2 * BATCH, node
