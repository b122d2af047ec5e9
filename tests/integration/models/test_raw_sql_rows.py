"""Raw SQL as a first-class producer: times in any ISO 8601 form are due when they say, and
what the worker could never move (a sending row without a lease, an accepted row without a
tracking id) is refused at insert, naming the rule (both databases)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from models import OutboxMessage
from worker.dispatch.claim import count_due

CONTENT = json.dumps({"$type": "SMSProject", "projectId": 123, "placeholders": ["John"]})


def insert(engine: Engine, client_message_id: str, **columns: object) -> None:
    names = ", ".join(["client_message_id", "recipient", "content", *columns])
    values = ", ".join([":id", "'46701234567'", ":content", *(f":{name}" for name in columns)])
    with engine.begin() as connection:
        connection.execute(
            text(f"INSERT INTO outbox_messages ({names}) VALUES ({values})"),
            {"id": client_message_id, "content": CONTENT, **columns},
        )


def due_now(engine: Engine) -> int:
    with engine.connect() as connection:
        return count_due(connection, now=datetime.now(UTC), cap=100)


def stored(engine: Engine, column: str) -> dict[str, datetime | None]:
    with Session(engine) as session:
        query = select(OutboxMessage.client_message_id, getattr(OutboxMessage, column))
        return {name: value for name, value in session.execute(query)}


def iso_forms(moment: datetime) -> dict[str, str]:
    """``moment`` written the ways ISO 8601 allows (and other languages' libraries write it)."""
    utc = moment.astimezone(UTC)
    east = utc + timedelta(hours=5)
    west = utc - timedelta(hours=5)
    return {
        "z": utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "z-fraction": utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "offset-zero": utc.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
        "east": east.strftime("%Y-%m-%dT%H:%M:%S+05:00"),
        "west": west.strftime("%Y-%m-%dT%H:%M:%S-05:00"),
        "space-z": utc.strftime("%Y-%m-%d %H:%M:%SZ"),
        "no-seconds": utc.strftime("%Y-%m-%dT%H:%MZ"),
    }


@pytest.mark.parametrize("form", list(iso_forms(datetime.now(UTC))))
def test_a_next_attempt_at_in_any_iso_form_is_due_when_it_says(engine: Engine, form: str) -> None:
    # SQLite compared 2026-12-07T05:00:00Z as text: not due until the day rolled over.
    now = datetime.now(UTC).replace(microsecond=0, second=0)
    insert(engine, "past", next_attempt_at=iso_forms(now - timedelta(minutes=2))[form])
    insert(engine, "future", next_attempt_at=iso_forms(now + timedelta(minutes=10))[form])
    assert due_now(engine) == 1
    times = stored(engine, "next_attempt_at")
    assert times["past"] == now - timedelta(minutes=2)
    assert times["future"] == now + timedelta(minutes=10)


def test_a_later_update_in_iso_form_is_normalised_too(engine: Engine) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    insert(engine, "later", next_attempt_at=iso_forms(now + timedelta(hours=3))["z"])
    assert due_now(engine) == 0
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE outbox_messages SET next_attempt_at = :at, expires_at = :until"),
            {
                "at": iso_forms(now - timedelta(minutes=1))["west"],
                "until": iso_forms(now + timedelta(hours=1))["east"],
            },
        )
    assert due_now(engine) == 1
    assert stored(engine, "expires_at")["later"] == now + timedelta(hours=1)


def test_an_expires_at_in_iso_form_reads_back_in_utc(engine: Engine) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    insert(engine, "code", expires_at=iso_forms(now + timedelta(minutes=10))["west"])
    assert stored(engine, "expires_at")["code"] == now + timedelta(minutes=10)


def test_a_time_that_is_no_time_is_refused_at_insert(engine: Engine) -> None:
    with pytest.raises((IntegrityError, DataError)) as caught:
        insert(engine, "bad", next_attempt_at="next tuesday")
    assert "next tuesday" in str(caught.value)


@pytest.mark.parametrize(
    ("columns", "rule"),
    [
        ({"status": "sending"}, "sending_lease"),
        ({"status": "accepted"}, "accepted_tracking_id"),
    ],
    ids=["sending-without-lease", "accepted-without-tracking-id"],
)
def test_a_row_the_worker_could_never_move_is_refused_at_insert(
    engine: Engine, columns: dict[str, object], rule: str
) -> None:
    with pytest.raises(IntegrityError) as caught:
        insert(engine, "stuck", **columns)
    assert rule in str(caught.value)
    lease = datetime.now(UTC) + timedelta(minutes=1)
    insert(engine, "leased", status="sending", locked_until=lease.isoformat())
    insert(engine, "tracked", status="accepted", tracking_id="0" * 32)
    assert sorted(stored(engine, "next_attempt_at")) == ["leased", "tracked"]


ROOT = Path(__file__).resolve().parents[3]


def documented_example(dialect: str) -> str:
    """The plain-SQL example of docs/producing.md#from-any-language-in-plain-sql for
    ``dialect`` (the statement after its comment)."""
    page = (ROOT / "docs" / "producing.md").read_text()
    name = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}[dialect]
    block = page.split("-- PostgreSQL: an urgent code", 1)[1].split("```", 1)[0]
    statements = {
        "PostgreSQL": block.split("-- SQLite:", 1)[0],
        "SQLite": block.split("-- SQLite:", 1)[1],
    }
    return statements[name].split("\n", 1)[1].strip().rstrip(";")


def test_the_documented_example_for_each_database_runs_as_documented(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql(documented_example(engine.dialect.name))
    with Session(engine) as session:
        row = session.scalars(select(OutboxMessage)).one()
    if engine.dialect.name == "postgresql":
        assert (row.client_message_id, row.priority) == ("code-7731", 0)
        assert row.expires_at is not None
    else:
        assert (row.client_message_id, row.priority) == ("reminder-17", 2)
        assert row.next_attempt_at == datetime(2026, 12, 8, 13, tzinfo=UTC)


def test_the_readme_insert_runs_on_each_database(engine: Engine) -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"```sql\n(.*?)```", readme, re.DOTALL)
    assert match is not None, "README has no SQL example"
    with engine.begin() as connection:
        connection.exec_driver_sql(match.group(1).strip().rstrip(";"))
    with Session(engine) as session:
        row = session.scalars(select(OutboxMessage)).one()
    assert (row.status, row.priority, row.attempts) == ("pending", 1, 0)
