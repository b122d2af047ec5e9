"""`outbox suppress add|remove|list` on both databases: one entry per number however written."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from models import OutboxMessage, enqueue_many
from tests.integration.ops.test_cli import run
from worker.database import make_engine


def test_add_list_and_remove_one_recipient_written_two_ways(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        database_url, "suppress", "add", "+46 70-123 45 67", "--reason", "STOP", capsys=capsys
    )
    assert (code, out.strip()) == (
        0,
        "suppressed 46701234567: normal and bulk messages (codes still go)",
    )
    code, out, _ = run(database_url, "suppress", "add", "46701234567", "--all-lanes", capsys=capsys)
    assert out.strip() == "suppressed 46701234567: every lane"

    code, out, _ = run(database_url, "suppress", "list", capsys=capsys)
    lines = out.strip().splitlines()
    assert len(lines) == 2  # the header and one entry
    assert lines[1].split()[:3] == ["46701234567", "all", "operator"]

    code, out, _ = run(database_url, "suppress", "remove", "0046701234567", capsys=capsys)
    assert code == 0
    code, _, err = run(database_url, "suppress", "remove", "46701234567", capsys=capsys)
    assert (code, err.strip()) == (1, "outbox: 46701234567 is not on the opt-out list")
    code, out, _ = run(database_url, "suppress", "list", capsys=capsys)
    assert out.strip() == "the opt-out list is empty"


def test_a_recipient_that_is_no_phone_number_is_refused_naming_it(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(database_url, "suppress", "add", "hello", capsys=capsys)
    assert code == 2
    assert err.startswith("outbox: recipient:")


def test_stats_shows_the_held_and_todays_segments_and_inspect_names_the_rule(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = make_engine(database_url)
    alpha = {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": "a" * 200}
    with Session(engine) as session, session.begin():
        enqueue_many(
            session,
            [
                {"client_message_id": key, "recipient": "46701234567", "content": alpha}
                for key in ("held", "sent")
            ],
        )
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=9)
    with engine.begin() as connection:
        connection.execute(
            update(OutboxMessage)
            .where(OutboxMessage.client_message_id == "held")
            .values(
                next_attempt_at=until,
                last_error=f"held: quiet hours until {until:%Y-%m-%d %H:%M} UTC",
            )
        )
        connection.execute(
            update(OutboxMessage)
            .where(OutboxMessage.client_message_id == "sent")
            .values(status="accepted", tracking_id="a" * 32, accepted_at=datetime.now(UTC))
        )
    engine.dispose()

    _, out, _ = run(database_url, "stats", "--json", capsys=capsys)
    policy = json.loads(out)["policy"]
    assert policy == {"held": 1, "held_until": until.isoformat(), "segments_today": {"normal": 2}}
    _, out, _ = run(database_url, "stats", capsys=capsys)
    assert "  held         1 (quiet hours, pacing, daily quotas), the last until" in out
    _, out, _ = run(database_url, "inspect", "held", "--json", capsys=capsys)
    assert json.loads(out)["policy"] == f"quiet hours: held until {until:%Y-%m-%d %H:%M:%S} UTC"
