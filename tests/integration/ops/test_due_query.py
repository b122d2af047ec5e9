"""The autoscaler's query (deploy/kubernetes/base/autoscaling.yaml) on a real PostgreSQL outbox:
it counts what `outbox stats` calls due, and reads the two partial indexes, not the history."""

from __future__ import annotations

from typing import Any

import yaml
from sqlalchemy import Engine, text

from tests.conftest import ROOT
from worker.database import database_now
from worker.ops.queries import queue_figures

AUTOSCALING = ROOT / "deploy" / "kubernetes" / "base" / "autoscaling.yaml"
# Accepted history (the bulk of a real table), then the backlog's shapes: due in each lane,
# scheduled for later, sending under a live lease and sending whose lease ended.
ROWS = """
INSERT INTO outbox_messages
    (client_message_id, recipient, content, status, tracking_id, accepted_at, priority,
     next_attempt_at, locked_until)
SELECT 'm' || n, '4670' || n, '{"$type": "SMSFromAlpha", "sender": "W", "text": "t"}',
       CASE WHEN n <= 20000 THEN 'accepted'
            WHEN n <= 20040 THEN 'pending' WHEN n <= 20050 THEN 'pending'
            WHEN n <= 20053 THEN 'sending' ELSE 'sending' END,
       CASE WHEN n <= 20000 THEN md5(n::text) END,
       CASE WHEN n <= 20000 THEN now() END,
       n % 3,
       CASE WHEN n BETWEEN 20041 AND 20050 THEN now() + interval '1 hour'
            ELSE now() - interval '1 minute' END,
       CASE WHEN n BETWEEN 20051 AND 20053 THEN now() - interval '1 second'
            WHEN n > 20053 THEN now() + interval '2 minutes' END
FROM generate_series(1, 20055) AS n
"""


def scaler_query() -> str:
    documents = list(yaml.safe_load_all(AUTOSCALING.read_text()))
    (scaled,) = [d for d in documents if d["kind"] == "ScaledObject"]
    query: str = scaled["spec"]["triggers"][0]["metadata"]["query"]
    return query


def plan(engine: Engine, query: str) -> Any:
    with engine.connect() as connection:
        return connection.scalar(text(f"EXPLAIN (FORMAT JSON) {query}"))


def index_names(node: Any) -> set[str]:
    names = {node["Index Name"]} if "Index Name" in node else set()
    for child in node.get("Plans", []):
        names |= index_names(child)
    return names


def test_the_scaler_counts_what_stats_calls_due_through_the_partial_indexes(
    postgres_engine: Engine,
) -> None:
    with postgres_engine.begin() as connection:
        connection.execute(text(ROWS))
        connection.execute(text("ANALYZE outbox_messages"))
    query = scaler_query()
    with postgres_engine.connect() as connection:
        due = connection.scalar(text(query))
        figures = queue_figures(connection, now=database_now(postgres_engine))
    assert due == figures.due_now == 43  # 40 pending due, 3 leases ended
    used = index_names(plan(postgres_engine, query)[0]["Plan"])
    # Pending rows through either partial index over them (the tenants' index serves the same
    # conditions), sending rows through the lease index; never a scan of the table.
    assert "ix_outbox_messages_lease" in used, used
    assert used & {"ix_outbox_messages_due", "ix_outbox_messages_tenant_due"}, used


def test_the_scaler_sees_nothing_due_in_an_idle_outbox(postgres_engine: Engine) -> None:
    with postgres_engine.connect() as connection:
        assert connection.scalar(text(scaler_query())) == 0
