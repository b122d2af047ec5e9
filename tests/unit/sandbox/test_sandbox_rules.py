"""The sandbox's rules without HTTP: Wiraya's validation, test recipients, fault settings, dice."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from sandbox.faults import Dice, Faults, RateLimiter, Validation, retry_after_seconds
from sandbox.ledger import new_tracking_ids
from sandbox.recipients import Behaviour, behaviour
from sandbox.validation import InvalidRequest, communications_of, content_error, message_error

SMS_PROJECT = {"$type": "SMSProject", "projectId": 123, "placeholders": ["John", "Order #5678"]}
ALPHA = {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": "Your code is 123456"}


def item(content: dict[str, Any], recipient: object = "46701234567") -> dict[str, Any]:
    return {"clientMessageId": "1", "recipient": recipient, "content": content}


@pytest.mark.parametrize(
    "content",
    [
        SMS_PROJECT,
        {**SMS_PROJECT, "$type": "WhatsappProject"},
        {**SMS_PROJECT, "$type": "VoiceProject", "nextAttemptUtc": "2026-01-01T10:00:00Z"},
        {**SMS_PROJECT, "placeholders": []},
        ALPHA,
        {**ALPHA, "sender": "ABCDEFGHIJK"},  # 11 characters
    ],
)
def test_documented_contents_are_valid(content: dict[str, Any]) -> None:
    assert message_error(item(content)) is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ({"projectId": 1, "$type": "SMSProject", "placeholders": []}, "first property"),
        ({"projectId": 1, "placeholders": []}, "$type: required"),
        ({**SMS_PROJECT, "$type": "Fax"}, "unknown type"),
        ({**SMS_PROJECT, "projectId": "123"}, "projectId"),
        ({**SMS_PROJECT, "projectId": True}, "projectId"),
        ({**SMS_PROJECT, "placeholders": ["a", 1]}, "placeholders"),
        ({**SMS_PROJECT, "nextAttemptUtc": "2026-01-01 10:00"}, "nextAttemptUtc"),
        ({**ALPHA, "sender": "ABCDEFGHIJKL"}, "11 characters"),
        ({**ALPHA, "text": ""}, "text"),
    ],
)
def test_invalid_contents_say_why(content: dict[str, Any], reason: str) -> None:
    error = content_error(content)

    assert error is not None
    assert reason in error


@pytest.mark.parametrize(
    "recipient", ["+46701234567", "046701234567", "4670 123", "4670-1234567", 46701234567]
)
def test_recipients_must_be_msisdn(recipient: object) -> None:
    error = message_error(item(SMS_PROJECT, recipient))

    assert error is not None
    assert error.startswith("recipient:")


@pytest.mark.parametrize(
    "body", [[], {"communications": {}}, {"communications": None}, {"other": []}]
)
def test_the_envelope_must_hold_a_communications_array(body: object) -> None:
    with pytest.raises(InvalidRequest, match=r"communications|object"):
        communications_of(body)


@pytest.mark.parametrize(
    ("recipient", "receipts", "expected"),
    [
        ("46701234567", [1, 5], Behaviour.ACCEPT),
        ("46700000001", [1, 2, 9], Behaviour.PERMANENT),
        ("46700000003", [1, 2, 9], Behaviour.TRANSIENT),
        ("46700000002", [1, 2], Behaviour.TRANSIENT),
        ("46700000002", [3, 4], Behaviour.ACCEPT),
        ("46700000004", [1], Behaviour.OMIT),
        ("46700000004", [2], Behaviour.ACCEPT),
        ("46700000005", [1], Behaviour.ACCEPT),
    ],
)
def test_test_recipients_have_fixed_outcomes(
    recipient: str, receipts: list[int], expected: Behaviour
) -> None:
    assert {behaviour(recipient, receipt) for receipt in receipts} == {expected}


def test_tracking_ids_are_unique_32_hex() -> None:
    ids = list(new_tracking_ids(1000))

    assert len(set(ids)) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_fault_settings_round_trip_through_the_admin_form() -> None:
    faults = Faults().updated(
        {"latency_ms": 25, "p503": 0.5, "max_batch": 100, "validation": "message"}
    )

    assert faults.latency == timedelta(milliseconds=25)
    assert faults.to_json()["latency_ms"] == 25.0
    assert Faults().updated(faults.to_json()) == faults
    assert faults.validation is Validation.MESSAGE


@pytest.mark.parametrize(
    "changes",
    [
        {"p500": 1.5},
        {"p500": 0.6, "p503": 0.6},
        {"latency": 5},
        {"nonsense": 1},
        {"outage": 1},
        {"max_batch": 0},
    ],
)
def test_bad_fault_settings_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Faults().updated(changes)


def test_dice_with_one_seed_repeat() -> None:
    first, second = Dice(7), Dice(7)

    assert [first.chance(0.5) for _ in range(50)] == [second.chance(0.5) for _ in range(50)]
    first.reseed()
    assert first.roll() == Dice(7).roll()


def test_rate_limiter_admits_a_seconds_worth_then_says_how_long_to_wait() -> None:
    limiter = RateLimiter()

    burst = [limiter.admit(3.0) for _ in range(3)]  # a new limit starts with a full bucket
    first = limiter.admit(0.5)  # one request per two seconds
    wait = limiter.admit(0.5)

    assert burst == [None, None, None]
    assert first is None
    assert wait is not None
    assert timedelta(seconds=1) < wait <= timedelta(seconds=2)
    assert retry_after_seconds(wait, None) == 2
    assert retry_after_seconds(wait, timedelta(seconds=17)) == 17
    assert limiter.admit(None) is None


def test_the_invalid_test_recipient_is_refused_by_validation_only() -> None:
    content = {"$type": "SMSProject", "projectId": 1, "placeholders": []}
    refused = message_error({"recipient": "46700000005", "content": content})
    assert refused == "recipient: not a valid mobile number (sandbox test recipient ...0000005)"
    assert message_error({"recipient": "46700000006", "content": content}) is None
