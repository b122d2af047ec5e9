"""Settings: every variable of design.md section 6 with its default, and every bad value refused."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from models import DEFAULT_LIMITS, MessageLimits
from worker import settings_timing
from worker.dispatch.gate.pacing import CLAIM_ALLOWANCE, MAX_SLOT_WAIT
from worker.dispatch.gate.policy import PROBE_MARGIN
from worker.dispatch.screen import MIN_REQUEST_WINDOW
from worker.dispatch.sending import RECORD_MARGIN
from worker.errors import SettingsError
from worker.settings import LimitSettings, NotifyMode, Settings, database_url_from_environ

KEY = "wk-live-7f3a9c2e5b1d4068"
WITH_KEY = {"WIRAYA_API_KEY": KEY}
SECONDS_VARIABLES = [
    "WIRAYA_TIMEOUT_SECONDS",
    "OUTBOX_MAX_AGE_SECONDS",
    "OUTBOX_BACKOFF_BASE_SECONDS",
    "OUTBOX_BACKOFF_MAX_SECONDS",
    "OUTBOX_LEASE_SECONDS",
    "OUTBOX_POLL_INTERVAL_SECONDS",
    "OUTBOX_RETENTION_SECONDS",
]
COUNT_VARIABLES = [
    "OUTBOX_BATCH_SIZE",
    "OUTBOX_MAX_ATTEMPTS",
    "OUTBOX_MAX_PARALLEL_DISPATCHES",
    "OUTBOX_CIRCUIT_FAILURES",
]


def refusal(environ: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as caught:
        Settings.from_environ(environ)
    return str(caught.value)


def test_defaults_are_the_contracts() -> None:
    settings = Settings.from_environ(WITH_KEY)
    assert settings.database_url == "sqlite:///outbox.db"
    assert settings.broker_url == "redis://localhost:6379/0"
    assert settings.wiraya_base_url == "https://api.wiraya.com"
    assert settings.api_key == KEY
    assert settings.wiraya_timeout == timedelta(seconds=30)
    assert settings.batch_size == 100
    assert settings.max_attempts == 10
    assert settings.max_age == timedelta(seconds=86_400)
    assert settings.backoff_base == timedelta(seconds=5)
    assert settings.backoff_max == timedelta(seconds=900)
    assert settings.lease == timedelta(seconds=120)
    assert settings.poll_interval == timedelta(seconds=1)
    # Added since design.md's first table.
    assert settings.max_parallel == 4
    assert settings.circuit_failures == 5
    assert settings.notify is NotifyMode.AUTO
    assert settings.retention == timedelta(days=30)


def test_every_variable_is_read() -> None:
    settings = Settings.from_environ(
        {
            "OUTBOX_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/app",
            "CELERY_BROKER_URL": "redis://127.0.0.1:6379/3",
            "WIRAYA_BASE_URL": "https://api.example.test",
            "WIRAYA_API_KEY": KEY,
            "WIRAYA_TIMEOUT_SECONDS": "2.5",
            "OUTBOX_BATCH_SIZE": "250",
            "OUTBOX_MAX_ATTEMPTS": "3",
            "OUTBOX_MAX_AGE_SECONDS": "3600",
            "OUTBOX_BACKOFF_BASE_SECONDS": "0.5",
            "OUTBOX_BACKOFF_MAX_SECONDS": "60",
            "OUTBOX_LEASE_SECONDS": "10",
            "OUTBOX_POLL_INTERVAL_SECONDS": "0.2",
            "OUTBOX_MAX_PARALLEL_DISPATCHES": "8",
            "OUTBOX_CIRCUIT_FAILURES": "2",
            "OUTBOX_NOTIFY": "off",
            "OUTBOX_RETENTION_SECONDS": "86400",
            "UNRELATED_VARIABLE": "ignored",
        }
    )
    assert settings.database_url == "postgresql+psycopg://postgres@127.0.0.1:5432/app"
    assert settings.database.listens_for_inserts
    assert not settings.notify_enabled
    assert settings.broker_url == "redis://127.0.0.1:6379/3"
    assert settings.wiraya_base_url == "https://api.example.test"
    assert settings.wiraya_timeout == timedelta(seconds=2.5)
    assert settings.batch_size == 250
    assert settings.max_attempts == 3
    assert settings.max_age == timedelta(hours=1)
    assert settings.backoff_base == timedelta(milliseconds=500)
    assert settings.backoff_max == timedelta(minutes=1)
    assert settings.lease == timedelta(seconds=10)
    assert settings.poll_interval == timedelta(milliseconds=200)
    assert settings.max_parallel == 8
    assert settings.circuit_failures == 2
    assert settings.retention == timedelta(days=1)


def test_empty_variables_count_as_unset() -> None:
    settings = Settings.from_environ({**WITH_KEY, "OUTBOX_BATCH_SIZE": "", "WIRAYA_BASE_URL": ""})
    assert settings.batch_size == 100
    assert settings.wiraya_base_url == "https://api.wiraya.com"


@pytest.mark.parametrize(
    "url", ["http://localhost:8080", "http://127.0.0.1:8080/", "http://[::1]:8080"]
)
def test_a_local_sandbox_needs_no_key_and_may_use_http(url: str) -> None:
    settings = Settings.from_environ({"WIRAYA_BASE_URL": url})
    assert settings.wiraya_is_local
    assert settings.wiraya_api_key is None


def test_inserts_wake_workers_unless_notify_is_off() -> None:
    sqlite = Settings.from_environ(WITH_KEY)
    postgres = Settings.from_environ({**WITH_KEY, "OUTBOX_DATABASE_URL": "postgresql://h/db"})
    on = Settings.from_environ({**WITH_KEY, "OUTBOX_NOTIFY": "on"})
    off = Settings.from_environ({**WITH_KEY, "OUTBOX_NOTIFY": "off"})
    assert [s.notify_enabled for s in (sqlite, postgres, on, off)] == [True, True, True, False]


def test_settings_are_frozen() -> None:
    settings = Settings.from_environ(WITH_KEY)
    with pytest.raises(ValueError, match="frozen"):
        settings.batch_size = 5  # type: ignore[misc]


def test_os_environ_is_the_default_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WIRAYA_API_KEY", KEY)
    monkeypatch.setenv("OUTBOX_BATCH_SIZE", "7")
    assert Settings.from_environ().batch_size == 7


def test_overrides_win_over_the_mapping() -> None:
    settings = Settings.from_environ({**WITH_KEY, "OUTBOX_BATCH_SIZE": "7"}, OUTBOX_BATCH_SIZE=9)
    assert settings.batch_size == 9


@pytest.mark.parametrize("variable", SECONDS_VARIABLES)
@pytest.mark.parametrize("value", ["abc", "30s", "0", "-5", "nan", "inf", "-inf", "1e400", "1e20"])
def test_bad_durations_are_refused_by_name(variable: str, value: str) -> None:
    message = refusal({**WITH_KEY, variable: value})
    assert message.startswith(f"{variable}: ")
    assert "\n" not in message


@pytest.mark.parametrize("variable", COUNT_VARIABLES)
@pytest.mark.parametrize("value", ["abc", "0", "-1", "1.5", "1e3", "ten"])
def test_bad_counts_are_refused_by_name(variable: str, value: str) -> None:
    message = refusal({**WITH_KEY, variable: value})
    assert message.startswith(f"{variable}: ")
    assert repr(value) in message  # says what it got


@pytest.mark.parametrize(
    ("timeout", "lease"),
    [("30", "30"), ("30", "29.9"), ("60", "20"), ("30", "33.9"), ("1", "4"), ("30", "33.999999")],
)
def test_the_lease_must_hold_a_whole_request_its_slot_wait_and_its_record(
    timeout: str, lease: str
) -> None:
    message = refusal(
        {**WITH_KEY, "WIRAYA_TIMEOUT_SECONDS": timeout, "OUTBOX_LEASE_SECONDS": lease}
    )
    assert message.startswith(f"OUTBOX_LEASE_SECONDS: {lease} must be at least ")
    assert f"WIRAYA_TIMEOUT_SECONDS ({timeout}) + 4" in message


@pytest.mark.parametrize(("timeout", "lease"), [("30", "34"), ("0.5", "4.5"), ("1", "5")])
def test_a_lease_of_the_timeout_and_four_seconds_is_enough(timeout: str, lease: str) -> None:
    settings = Settings.from_environ(
        {**WITH_KEY, "WIRAYA_TIMEOUT_SECONDS": timeout, "OUTBOX_LEASE_SECONDS": lease}
    )
    assert settings.lease - settings.wiraya_timeout == timedelta(seconds=4)


@pytest.mark.parametrize("timeout", ["0.49", "0.1", "0.001"])
def test_a_timeout_shorter_than_any_request_is_refused(timeout: str) -> None:
    """No request starts with less than half a second to its deadline: a shorter timeout would
    make none at all, and every message would wait for ever."""
    message = refusal({**WITH_KEY, "WIRAYA_TIMEOUT_SECONDS": timeout})
    assert message.startswith(f"WIRAYA_TIMEOUT_SECONDS: {timeout} is shorter than 0.5 s")


def test_the_rules_margins_are_the_dispatchers() -> None:
    """The settings' rule names the margins the dispatcher keeps; it cannot import them."""
    assert settings_timing.SHORTEST_TIMEOUT == MIN_REQUEST_WINDOW
    assert settings_timing.LEASE_HEADROOM == RECORD_MARGIN + MAX_SLOT_WAIT + CLAIM_ALLOWANCE
    assert PROBE_MARGIN == RECORD_MARGIN + MAX_SLOT_WAIT + CLAIM_ALLOWANCE


@pytest.mark.parametrize(
    "environ",
    [
        {"OUTBOX_BACKOFF_BASE_SECONDS": "901"},
        {"OUTBOX_BACKOFF_MAX_SECONDS": "4"},
        {"OUTBOX_BACKOFF_BASE_SECONDS": "10", "OUTBOX_BACKOFF_MAX_SECONDS": "9.99"},
    ],
)
def test_the_backoff_base_must_not_exceed_its_maximum(environ: dict[str, str]) -> None:
    message = refusal({**WITH_KEY, **environ})
    assert message.startswith("OUTBOX_BACKOFF_BASE_SECONDS: ")
    assert "OUTBOX_BACKOFF_MAX_SECONDS" in message


def test_an_equal_backoff_base_and_maximum_are_accepted() -> None:
    environ = {"OUTBOX_BACKOFF_BASE_SECONDS": "60", "OUTBOX_BACKOFF_MAX_SECONDS": "60"}
    assert Settings.from_environ({**WITH_KEY, **environ}).backoff_max == timedelta(minutes=1)


@pytest.mark.parametrize(
    "environ",
    [
        {},  # the real API by default
        {"WIRAYA_BASE_URL": "https://api.wiraya.com"},
        {"WIRAYA_BASE_URL": "https://sandbox.example.test"},
    ],
)
def test_a_key_is_required_for_a_non_local_url(environ: dict[str, str]) -> None:
    assert refusal(environ).startswith("WIRAYA_API_KEY: ")


@pytest.mark.parametrize("key", [" ", "\t\n"], ids=repr)
def test_a_blank_key_is_refused(key: str) -> None:
    assert refusal({"WIRAYA_API_KEY": key}).startswith("WIRAYA_API_KEY: ")


UNFIT_KEYS = [
    KEY + " ",  # a .env line with a trailing space
    " " + KEY,
    KEY + "\t",
    KEY + "\n",  # a secret's file read with its final newline
    KEY[:4] + "\u00e9" + KEY[4:],  # not ASCII: the HTTP library would refuse or mangle it
    KEY[:4] + "\u200b" + KEY[4:],  # a zero-width space from a copy-paste
    KEY[:4] + "\x7f" + KEY[4:],
    KEY[:4] + "\x00" + KEY[4:],
]


@pytest.mark.parametrize("key", UNFIT_KEYS, ids=repr)
def test_a_key_unfit_for_an_http_header_is_refused_naming_the_variable_only(key: str) -> None:
    message = refusal({"WIRAYA_API_KEY": key})
    assert message.startswith("WIRAYA_API_KEY: must be printable ASCII")
    assert KEY[:4] not in message and KEY[-4:] not in message


def test_a_key_with_inner_spaces_as_a_header_may_hold_them_is_taken() -> None:
    assert Settings.from_environ({"WIRAYA_API_KEY": "Bearer abc"}).api_key == "Bearer abc"


@pytest.mark.parametrize(
    "url", ["http://api.wiraya.com", "http://10.0.0.5:8080", "http://localhost.example.com"]
)
def test_plain_http_to_a_non_local_host_is_refused(url: str) -> None:
    message = refusal({**WITH_KEY, "WIRAYA_BASE_URL": url})
    assert message.startswith("WIRAYA_BASE_URL: ")
    assert "http" in message


@pytest.mark.parametrize("url", ["api.wiraya.com", "ftp://api.wiraya.com", "https://", "wiraya"])
def test_base_urls_that_are_not_http_urls_are_refused(url: str) -> None:
    assert refusal({**WITH_KEY, "WIRAYA_BASE_URL": url}).startswith("WIRAYA_BASE_URL: ")


def test_a_bad_notify_mode_is_refused() -> None:
    assert refusal({**WITH_KEY, "OUTBOX_NOTIFY": "yes"}).startswith("OUTBOX_NOTIFY: ")


def test_the_key_is_not_in_repr_or_str() -> None:
    settings = Settings.from_environ(WITH_KEY)
    for shown in (repr(settings), str(settings), f"{settings}", settings.model_dump_json()):
        assert KEY not in shown
        assert "**********" in shown  # the field is there, masked


BAD_NEXT_TO_A_KEY = [
    {"WIRAYA_TIMEOUT_SECONDS": "abc"},
    {"OUTBOX_BATCH_SIZE": "0"},
    {"OUTBOX_LEASE_SECONDS": "5"},
    {"OUTBOX_BACKOFF_BASE_SECONDS": "1000"},
    {"WIRAYA_BASE_URL": "http://api.wiraya.com"},
    {"WIRAYA_BASE_URL": "not a url"},
    {"OUTBOX_NOTIFY": "sometimes"},
    {"OUTBOX_POLL_INTERVAL_SECONDS": "inf"},
]


@pytest.mark.parametrize("bad", BAD_NEXT_TO_A_KEY, ids=lambda bad: next(iter(bad)))
def test_the_key_is_in_no_settings_error(bad: dict[str, str]) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_environ({**WITH_KEY, **bad})
    error = caught.value
    assert str(error).startswith(f"{next(iter(bad))}: ")
    assert KEY not in str(error)
    assert KEY not in repr(error)
    assert KEY not in "".join(str(arg) for arg in error.args)
    # No chained pydantic error (whose text holds every input) rides along into a traceback.
    assert error.__cause__ is None
    assert error.__context__ is None


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


def test_the_database_url_alone() -> None:
    assert database_url_from_environ({}) == "sqlite:///outbox.db"
    assert database_url_from_environ({"OUTBOX_DATABASE_URL": ""}) == "sqlite:///outbox.db"
    url = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    # No API key needed: migrations and the CLI run without one.
    assert database_url_from_environ({"OUTBOX_DATABASE_URL": url}) == url


# --- message limits -----------------------------------------------------------------------------

LIMIT_VARIABLES = {
    "OUTBOX_MAX_TEXT_CHARS": "text_chars",
    "OUTBOX_MAX_PLACEHOLDER_CHARS": "placeholder_chars",
    "OUTBOX_MAX_PLACEHOLDERS_TOTAL_CHARS": "placeholders_total_chars",
    "OUTBOX_MAX_MESSAGE_BYTES": "message_bytes",
}


def test_message_limits_default_to_the_producers() -> None:
    assert Settings.from_environ(WITH_KEY).message_limits == DEFAULT_LIMITS
    assert LimitSettings.from_environ({}).message_limits == DEFAULT_LIMITS


def test_every_limit_variable_is_read() -> None:
    environ = {variable: str(1_000 + index) for index, variable in enumerate(LIMIT_VARIABLES)}
    limits = Settings.from_environ({**WITH_KEY, **environ}).message_limits
    assert limits == MessageLimits(
        text_chars=1_000,
        placeholder_chars=1_001,
        placeholders_total_chars=1_002,
        message_bytes=1_003,
    )
    assert {getattr(limits, field) for field in LIMIT_VARIABLES.values()} == {
        int(value) for value in environ.values()
    }


@pytest.mark.parametrize("variable", list(LIMIT_VARIABLES))
@pytest.mark.parametrize("value", ["0", "-5", "abc", "1.5", "100000000"])
def test_bad_limits_are_refused_by_name(variable: str, value: str) -> None:
    assert refusal({**WITH_KEY, variable: value}).startswith(f"{variable}: ")


def test_batches_grow_to_500_by_default_or_to_a_larger_configured_size() -> None:
    assert Settings.from_environ(WITH_KEY).batch_size_cap == 500
    larger = Settings.from_environ({**WITH_KEY, "OUTBOX_BATCH_SIZE": "800"})
    assert larger.batch_size_cap == 800
    capped = Settings.from_environ({**WITH_KEY, "OUTBOX_BATCH_SIZE_MAX": "150"})
    assert capped.batch_size_cap == 150


def test_a_cap_below_the_batch_size_is_refused() -> None:
    reason = refusal({**WITH_KEY, "OUTBOX_BATCH_SIZE": "200", "OUTBOX_BATCH_SIZE_MAX": "100"})
    assert "OUTBOX_BATCH_SIZE_MAX: must not be below OUTBOX_BATCH_SIZE" in reason


def test_a_secret_may_come_from_the_file_its_file_variable_names(tmp_path: Path) -> None:
    key_file, url_file = tmp_path / "key", tmp_path / "url"
    key_file.write_text(KEY + "\n")  # as `echo KEY > file` writes it
    url_file.write_text("postgresql+psycopg://outbox_worker:pw@db/outbox\n")
    environ = {"WIRAYA_API_KEY_FILE": str(key_file), "OUTBOX_DATABASE_URL_FILE": str(url_file)}
    settings = Settings.from_environ(environ)
    assert settings.api_key == KEY
    assert settings.database_url == "postgresql+psycopg://outbox_worker:pw@db/outbox"
    assert database_url_from_environ(environ) == settings.database_url
    # The variable itself, when set, wins over its file.
    assert Settings.from_environ({**environ, "WIRAYA_API_KEY": "other"}).api_key == "other"


def test_an_unreadable_secret_file_is_named_without_its_content(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    message = refusal({"WIRAYA_API_KEY_FILE": str(missing)})
    assert message == f"WIRAYA_API_KEY_FILE: cannot read {missing}: No such file or directory"
    key_file = tmp_path / "key"
    key_file.write_text(KEY + " \n")
    assert refusal({"WIRAYA_API_KEY_FILE": str(key_file)}).startswith("WIRAYA_API_KEY: must be")
