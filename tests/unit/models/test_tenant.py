"""A tenant's name is checked like every other field: refused with the field named and why."""

from __future__ import annotations

import pytest

from models import DEFAULT_LIMITS, InvalidMessage, NewMessage
from models.message import validated_batch

CONTENT = {"$type": "SMSProject", "projectId": 1, "placeholders": []}


def create(**options: object) -> NewMessage:
    return NewMessage.create(recipient="46701234567", content=CONTENT, **options)  # type: ignore[arg-type]


def test_the_default_tenant_is_empty_and_left_to_the_columns_default() -> None:
    message = create()
    assert message.tenant == ""
    assert "tenant" not in message.row()


@pytest.mark.parametrize("name", ["clinic-7", "shop.se", "A", "x_y", "9" * 64])
def test_a_plain_name_is_kept_and_written(name: str) -> None:
    assert create(tenant=name).row()["tenant"] == name


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (7, "must be text, got int"),
        (None, "must be text, got NoneType"),
        ("a=b", "letters, digits"),
        ("a,b", "letters, digits"),
        (" shop", "letters, digits"),
        ("-shop", "starting with"),
        ("shop\x1b[2J", "letters, digits"),
        ("x" * 65, "at most 64"),
    ],
)
def test_a_bad_name_is_refused_naming_the_field(value: object, words: str) -> None:
    with pytest.raises(InvalidMessage) as refused:
        create(tenant=value)
    assert refused.value.field == "tenant"
    assert words in refused.value.reason


def test_in_a_batch_the_bad_messages_index_is_named() -> None:
    good = {"recipient": "46701234567", "content": CONTENT, "tenant": "shop"}
    with pytest.raises(InvalidMessage) as refused:
        validated_batch([good, {**good, "tenant": "a b"}], DEFAULT_LIMITS)
    assert refused.value.field == "messages[1].tenant"
