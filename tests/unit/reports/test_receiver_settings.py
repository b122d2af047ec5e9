"""The receiver's settings: the callback login is required, checked, and never shown."""

from __future__ import annotations

import pytest

from worker.errors import SettingsError
from worker.settings import ReceiverSettings

AUTH = "wiraya:9f2c41d07be3a86e"


def refusal(environ: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as caught:
        ReceiverSettings.from_environ(environ)
    return str(caught.value)


def test_defaults_and_the_login() -> None:
    settings = ReceiverSettings.from_environ({"OUTBOX_CALLBACK_AUTH": AUTH})
    assert settings.callback_credentials == b"wiraya:9f2c41d07be3a86e"
    assert settings.callback_max_body_bytes == 4 * 1024 * 1024
    assert settings.database_url == "sqlite:///outbox.db"
    assert settings.broker_url == "redis://localhost:6379/0"


def test_the_body_limit_is_read() -> None:
    settings = ReceiverSettings.from_environ(
        {"OUTBOX_CALLBACK_AUTH": AUTH, "OUTBOX_CALLBACK_MAX_BODY_BYTES": "1024"}
    )
    assert settings.callback_max_body_bytes == 1024


def test_the_login_is_required() -> None:
    assert refusal({}).startswith("OUTBOX_CALLBACK_AUTH: required")


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("no-colon-here-at-all", "user:password"),
        (":9f2c41d07be3a86e", "user:password"),
        ("wiraya:short", "at least 12 characters"),
        ("wi raya:9f2c41d07be3a86e", "user:password"),
    ],
)
def test_a_bad_login_is_refused_without_echoing_it(value: str, why: str) -> None:
    message = refusal({"OUTBOX_CALLBACK_AUTH": value})
    assert message.startswith("OUTBOX_CALLBACK_AUTH: ")
    assert why in message
    password = value.partition(":")[2]
    assert value not in message
    assert not password or password not in message


@pytest.mark.parametrize("value", ["0", "-5", "abc", str(2**31)])
def test_a_bad_body_limit_is_refused_by_name(value: str) -> None:
    message = refusal({"OUTBOX_CALLBACK_AUTH": AUTH, "OUTBOX_CALLBACK_MAX_BODY_BYTES": value})
    assert message.startswith("OUTBOX_CALLBACK_MAX_BODY_BYTES: ")


def test_the_login_is_not_in_repr() -> None:
    settings = ReceiverSettings.from_environ({"OUTBOX_CALLBACK_AUTH": AUTH})
    assert "9f2c41d07be3a86e" not in repr(settings)
    assert "9f2c41d07be3a86e" not in str(settings)
