"""Engines on real PostgreSQL: behind a transaction pooler nothing is prepared on the server."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from worker.database import make_engine

pytestmark = pytest.mark.postgres

# psycopg prepares a statement on the server from its fifth execution on one connection.
EXECUTIONS = 8


def prepared_after_repeats(url: str) -> int:
    """How many statements the server holds prepared after one statement ran repeatedly."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            for number in range(EXECUTIONS):
                connection.execute(
                    text("SELECT count(*) FROM outbox_messages WHERE id > :n"), {"n": number}
                )
            return int(connection.scalar(text("SELECT count(*) FROM pg_prepared_statements")) or 0)
    finally:
        engine.dispose()


def test_a_direct_connection_lets_psycopg_prepare_repeated_statements(postgres_url: str) -> None:
    assert prepared_after_repeats(postgres_url) >= 1


def test_behind_a_transaction_pooler_nothing_is_prepared(postgres_url: str) -> None:
    # A statement prepared on one server connection is unknown on the next one the pooler picks.
    assert prepared_after_repeats(postgres_url + "?pooler=transaction") == 0
