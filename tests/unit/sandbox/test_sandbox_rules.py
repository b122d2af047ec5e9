"""The sandbox's rules without HTTP: Wiraya's validation, test recipients, fault settings, dice."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from sandbox.faults import (
    AccountLimiters,
    Dice,
    Faults,
    RateLimiter,
    Validation,
    retry_after_seconds,
)
from sandbox.ledger import new_tracking_ids
from sandbox.recipients import Behaviour, behaviour, draws_server_error
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


# The poison recipient ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipient", "poison"),
    [
        ("46700000006", True),
        ("4670000000006", True),
        ("46700000005", False),
        ("46701234566", False),
    ],
)
def test_the_poison_suffix_marks_a_recipient_whose_request_fails(
    recipient: str, poison: bool
) -> None:
    assert draws_server_error(recipient) is poison
    assert behaviour(recipient, 1) is Behaviour.ACCEPT  # per message it is ordinary


# New fault settings ------------------------------------------------------------------------------


def test_trickle_html_400_and_camel_case_round_trip_through_the_admin_form() -> None:
    faults = Faults().updated(
        {"trickle_ms": 1500, "p_trickle": 0.5, "p400_html": 0.25, "camel_case_keys": True}
    )

    assert faults.trickle == timedelta(milliseconds=1500)
    assert (faults.p_trickle, faults.p400_html, faults.camel_case_keys) == (0.5, 0.25, True)
    assert Faults().updated(faults.to_json()) == faults


@pytest.mark.parametrize(
    "changes",
    [
        {"trickle_ms": -1},
        {"trickle": 5},
        {"p_trickle": 2},
        {"p400_html": -0.1},
        {"p400_html": 0.5, "p500": 0.6},
        {"camel_case_keys": "yes"},
    ],
)
def test_bad_new_fault_settings_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Faults().updated(changes)


# The rate limiter: a token bucket, measured on a clock the test moves ---------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def admitted_times(rate: float, seconds: float, every: float) -> list[float]:
    """Offer a request every `every` seconds for `seconds`; the times the limiter let through."""
    clock = Clock()
    limiter = RateLimiter(clock)
    passed = []
    start = clock.now
    while clock.now - start < seconds:
        if limiter.admit(rate) is None:
            passed.append(clock.now - start)
        clock.now += every
    return passed


@pytest.mark.parametrize("rate", [0.2, 1.0, 3.0, 50.0])
def test_hammering_gets_the_rate_plus_one_bucket_and_no_more(rate: float) -> None:
    seconds = 60.0
    passed = admitted_times(rate, seconds, every=0.001)

    capacity = max(1.0, rate)
    assert len(passed) <= rate * seconds + capacity
    assert len(passed) >= rate * seconds + capacity - 2


@pytest.mark.parametrize("rate", [1.0, 3.0, 50.0])
def test_in_any_second_at_most_a_bucket_plus_a_seconds_refill(rate: float) -> None:
    passed = admitted_times(rate, 30.0, every=0.001)

    busiest = max(
        sum(1 for t in passed if start <= t < start + 1.0) for start in [t for t in passed]
    )
    assert busiest <= 2 * max(1.0, rate)
    after_the_burst = [t for t in passed if t >= 2.0]
    busiest_steady = max(
        sum(1 for t in after_the_burst if start <= t < start + 1.0) for start in after_the_burst
    )
    assert busiest_steady <= rate + 1


@pytest.mark.parametrize("rate", [0.5, 1.0, 3.0, 50.0])
def test_a_client_keeping_to_the_rate_is_never_refused(rate: float) -> None:
    interval = 1.0 / rate
    clock = Clock()
    limiter = RateLimiter(clock)

    refusals = 0
    for _ in range(500):
        refusals += limiter.admit(rate) is not None
        clock.now += interval

    assert refusals == 0


def test_a_refused_request_uses_nothing_and_the_wait_is_to_the_next_token() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert limiter.admit(1.0) is None

    clock.now += 0.25
    waits = [limiter.admit(1.0) for _ in range(5)]  # refused: none of them uses a token
    clock.now += 0.75

    assert waits == [timedelta(seconds=0.75)] * 5
    assert limiter.admit(1.0) is None
    assert limiter.admit(1.0) == timedelta(seconds=1)


def test_a_new_limit_or_a_reset_starts_with_a_full_bucket() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert [limiter.admit(2.0) for _ in range(3)] == [None, None, timedelta(seconds=0.5)]

    assert [limiter.admit(1.0) for _ in range(2)] == [None, timedelta(seconds=1)]
    limiter.reset()
    assert limiter.admit(1.0) is None


def test_retry_after_rounds_the_wait_up_to_whole_seconds() -> None:
    assert retry_after_seconds(timedelta(milliseconds=20), None) == 1
    assert retry_after_seconds(timedelta(seconds=1.2), None) == 2
    assert retry_after_seconds(timedelta(seconds=0.2), timedelta(seconds=5)) == 5


def test_each_api_key_has_a_bucket_of_its_own() -> None:
    clock = Clock()
    limiters = AccountLimiters(clock)
    assert limiters.admit("key-a", 1.0) is None
    assert limiters.admit("key-a", 1.0) is not None  # key-a's one token is spent
    assert limiters.admit("key-b", 1.0) is None  # key-b's are its own
    clock.now += 1.0
    assert limiters.admit("key-a", 1.0) is None
    limiters.reset()
    assert limiters.admit("key-b", 1.0) is None  # a new bucket, full
