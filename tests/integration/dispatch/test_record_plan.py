"""The record reads its results once, whatever plan PostgreSQL picks for it.

A record that joined its rows with a record set built from its parameter could be planned
with the table outside and the record set rebuilt for every row: quadratic in the batch, and
a prepared statement keeps such a plan. Here the planner is pushed to the worst orders it
has (no hash or merge joins, no index scans): no node of the plan may handle more than a few
rows per batch row, in all its loops. The generic plan that a prepared record may keep is
pinned too: the rows found through the primary key, nothing joined to them.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from sqlalchemy import text

from models import Status
from models.databases import POSTGRESQL
from models.databases.postgresql import RECORD
from tests.integration.dispatch.harness import Outbox
from worker.dispatch.record import RowResult, record_parameters

TOKEN = 4242
BATCH = 200
HISTORY = 4000  # rows, of which every twentieth is being sent


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


def _prepared(statement: str) -> tuple[str, list[str]]:
    """``statement`` with its named parameters numbered, for PREPARE, and their names in order
    (a ``::`` cast is not a parameter)."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"(?<![:\w]):(\w+)", number, statement), names


def test_the_generic_plan_finds_the_rows_by_id_and_joins_nothing(pg_outbox: Outbox) -> None:
    """psycopg prepares the record after five executions, and PostgreSQL may then keep a
    generic plan: there too the rows are found through the primary key, and nothing is joined
    to them. A relation joined into an UPDATE goes along with every row written as a copy of
    its whole row (kept for rechecking a concurrent update): the results object, 50-70 KB for
    a batch of 500, copied 500 times."""
    with pg_outbox.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO outbox_messages (client_message_id, recipient, content) "
                "SELECT 'history-' || n, '46705' || n, '{}' FROM generate_series(1, :rows) AS n"
            ),
            {"rows": HISTORY},
        )
        ids = list(
            connection.scalars(
                text(
                    "UPDATE outbox_messages SET status = 'sending', locked_until = updated_at, "
                    "claim_token = :token WHERE id % 20 = 0 RETURNING id"
                ),
                {"token": TOKEN},
            )
        )
        connection.execute(text("ANALYZE outbox_messages"))
    results = [RowResult(id, Status.ACCEPTED, 1, tracking_id=f"{id:032x}") for id in ids]
    parameters = record_parameters(POSTGRESQL, results, token=TOKEN, now=pg_outbox.clock())
    statement, names = _prepared(RECORD)
    types = {"now": "timestamptz", "token": "bigint"}
    declared = ", ".join(types.get(name, "text") for name in names)
    # EXPLAIN takes no bound parameters: the values are written into its text
    values = ", ".join(f"%({name})s" for name in names)

    with pg_outbox.engine.connect() as connection:
        connection.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        connection.execute(text(f"PREPARE outbox_record ({declared}) AS {statement}"))
        try:
            with psycopg.ClientCursor(connection.connection.driver_connection) as cursor:
                cursor.execute(
                    f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE outbox_record ({values})", parameters
                )
                ((explained,),) = cursor.fetchall()
        finally:
            connection.rollback()
            connection.execute(text("DEALLOCATE outbox_record"))
            connection.commit()

    nodes = _nodes(explained[0]["Plan"])
    assert nodes[0]["Actual Rows"] == len(ids)  # every row written
    assert {"Nested Loop", "Hash Join", "Merge Join"}.isdisjoint(n["Node Type"] for n in nodes)
    (read,) = [node for node in nodes[1:] if node.get("Relation Name") == "outbox_messages"]
    assert (read["Node Type"], read["Index Name"], read["Actual Loops"]) == (
        "Index Scan",
        "pk_outbox_messages",
        1,
    )
