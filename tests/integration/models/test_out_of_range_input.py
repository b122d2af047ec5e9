"""Input at the edges of its type: times out of range, NewMessage objects built by hand, C1
control characters. Each is an InvalidMessage naming the field, and the caller's transaction
stays usable (both databases)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from models import InvalidMessage, NewMessage, SMSProject, enqueue, enqueue_many

CONTENT = {"$type": "SMSProject", "projectId": 123, "placeholders": ["John"]}
EAST = timezone(timedelta(hours=5))
WEST = timezone(timedelta(hours=-5))


def message(name: str, **fields: Any) -> dict[str, Any]:
    return {"recipient": "46701234567", "content": CONTENT, "client_message_id": name, **fields}


def client_ids(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        query = text("SELECT client_message_id FROM outbox_messages ORDER BY client_message_id")
        return list(connection.scalars(query))


OUT_OF_RANGE = [
    ({"ttl": timedelta.max}, "ttl"),
    ({"send_at": datetime.max.replace(tzinfo=UTC), "ttl": timedelta(days=1)}, "ttl"),
    ({"expires_at": datetime.max.replace(tzinfo=WEST)}, "expires_at"),
    ({"send_at": datetime.max.replace(tzinfo=WEST)}, "send_at"),
    ({"send_at": datetime.min.replace(tzinfo=EAST)}, "send_at"),
    (
        {"content": {**CONTENT, "nextAttemptUtc": "9999-12-31T23:00:00-05:00"}},
        "content.nextAttemptUtc",
    ),
    (
        {"content": {**CONTENT, "nextAttemptUtc": "0001-01-01T01:00:00+05:00"}},
        "content.nextAttemptUtc",
    ),
]


@pytest.mark.parametrize(("fields", "field"), OUT_OF_RANGE, ids=[f for _, f in OUT_OF_RANGE])
def test_a_time_out_of_range_is_refused_by_name_and_the_transaction_stays_usable(
    engine: Engine, fields: dict[str, Any], field: str
) -> None:
    with Session(engine) as session:
        enqueue(session, **message("before"))
        with pytest.raises(InvalidMessage) as caught:
            enqueue(session, **message("bad", **fields))
        assert caught.value.field == field
        assert "range" in caught.value.reason
        with pytest.raises(InvalidMessage) as caught:
            enqueue_many(session, [message("ok"), message("bad", **fields)])
        assert caught.value.field == f"messages[1].{field}"
        assert session.execute(text("SELECT 1")).scalar() == 1  # not aborted
        enqueue(session, **message("after"))
        session.commit()
    assert client_ids(engine) == ["after", "before"]


def test_the_latest_and_earliest_storable_times_still_pass(engine: Engine) -> None:
    latest = datetime.max.replace(tzinfo=EAST) - timedelta(days=1)
    with Session(engine) as session, session.begin():
        enqueue(session, **message("late", send_at=latest))
        enqueue(session, **message("early", send_at=datetime.min.replace(tzinfo=WEST)))
    assert client_ids(engine) == ["early", "late"]


HAND_BUILT = [
    ({"recipient": "not a number"}, "recipient"),
    ({"client_message_id": "a\x00b"}, "client_message_id"),
    ({"client_message_id": "a\x85b"}, "client_message_id"),
    ({"client_message_id": ""}, "client_message_id"),
    ({"content": {"$type": "SMSProject"}}, "content"),
    ({"send_at": datetime(2030, 1, 1)}, "send_at"),
    ({"send_at": datetime.max.replace(tzinfo=WEST)}, "send_at"),
    ({"priority": 7}, "priority"),
    ({"expires_at": "tomorrow"}, "expires_at"),
]


@pytest.mark.parametrize(("fields", "field"), HAND_BUILT, ids=[f for _, f in HAND_BUILT])
def test_a_hand_built_new_message_is_validated_by_enqueue_many(
    engine: Engine, fields: dict[str, Any], field: str
) -> None:
    # NewMessage and its constructor are public: enqueue_many used to write what it held.
    good = NewMessage.create(**message("good"))
    given = {
        "client_message_id": "hand",
        "recipient": "46701234567",
        "content": SMSProject(project_id=1),
        **fields,
    }
    with Session(engine) as session:
        with pytest.raises(InvalidMessage) as caught:
            enqueue_many(session, [good, NewMessage(**given)])
        assert caught.value.field.startswith(f"messages[1].{field}")
        enqueue(session, **message("after"))
        session.commit()
    assert client_ids(engine) == ["after"]


def test_a_hand_built_new_message_is_normalised(engine: Engine) -> None:
    hand = NewMessage(
        client_message_id="hand",
        recipient="+46 70-123 45 67",
        content=SMSProject(project_id=1),
        send_at=datetime(2031, 1, 1, tzinfo=WEST),
    )
    with Session(engine) as session, session.begin():
        assert enqueue_many(session, [hand]) == ["hand"]
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT recipient FROM outbox_messages")).scalar()
    assert stored == "46701234567"


@pytest.mark.parametrize("character", ["\x80", "\x85", "\x9b", "\x9f"])
def test_c1_control_characters_are_refused_in_a_client_message_id(
    engine: Engine, character: str
) -> None:
    with Session(engine) as session:
        with pytest.raises(InvalidMessage) as caught:
            enqueue(session, **message(f"a{character}b"))
        assert caught.value.field == "client_message_id"
        assert "control character" in caught.value.reason
        session.commit()
    assert client_ids(engine) == []
