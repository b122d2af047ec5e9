"""Behind a transaction pooler: the `?pooler=transaction` URL option and OUTBOX_LISTEN_URL."""

from __future__ import annotations

import re

import pytest
from sqlalchemy.exc import ArgumentError

from worker.database import behind_transaction_pooler, driver_url, make_engine
from worker.errors import SettingsError
from worker.settings import Settings

DIRECT = "postgresql+psycopg://postgres@127.0.0.1:5432/app"
POOLED = "postgresql+psycopg://postgres@127.0.0.1:6432/app?pooler=transaction"
LOCAL_API = {"WIRAYA_BASE_URL": "http://localhost:8080"}


def settings(**environ: str) -> Settings:
    return Settings.from_environ({**LOCAL_API, **environ})


def refusal(**environ: str) -> str:
    with pytest.raises(SettingsError) as caught:
        settings(**environ)
    return str(caught.value)


def test_the_option_says_a_transaction_pooler_is_in_between() -> None:
    assert behind_transaction_pooler(POOLED)
    assert not behind_transaction_pooler(DIRECT)
    assert not behind_transaction_pooler("sqlite:///outbox.db")


def test_the_driver_never_sees_the_option() -> None:
    assert driver_url(POOLED).query == {}
    other = driver_url(POOLED.replace("?", "?sslmode=disable&"))
    assert dict(other.query) == {"sslmode": "disable"}
    assert make_engine(POOLED).url.query == {}


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (DIRECT + "?pooler=statement", "the one pooler mode to name is pooler=transaction"),
        ("sqlite:///outbox.db?pooler=transaction", "needs a postgresql+psycopg:// URL"),
        (
            "postgresql+pg8000://postgres@h/app?pooler=transaction",
            "needs a postgresql+psycopg:// URL",
        ),
    ],
)
def test_a_bad_pooler_option_is_refused_naming_the_variable(url: str, why: str) -> None:
    assert refusal(OUTBOX_DATABASE_URL=url).startswith("OUTBOX_DATABASE_URL: pooler=")
    assert why in refusal(OUTBOX_DATABASE_URL=url)
    with pytest.raises(ArgumentError, match=re.escape(why)):
        make_engine(url)


def test_beat_listens_on_the_database_url_unless_it_goes_through_the_pooler() -> None:
    assert settings(OUTBOX_DATABASE_URL=DIRECT).listen_on == DIRECT
    assert settings(OUTBOX_DATABASE_URL=POOLED).listen_on is None
    pooled = settings(OUTBOX_DATABASE_URL=POOLED, OUTBOX_LISTEN_URL=DIRECT)
    assert pooled.listen_on == DIRECT
    assert pooled.behind_transaction_pooler


def test_the_listen_url_must_be_a_direct_postgresql_connection() -> None:
    assert refusal(OUTBOX_DATABASE_URL=POOLED, OUTBOX_LISTEN_URL=POOLED) == (
        "OUTBOX_LISTEN_URL: must be a direct connection: "
        "LISTEN does not work through a transaction pooler"
    )
    assert refusal(OUTBOX_DATABASE_URL=POOLED, OUTBOX_LISTEN_URL="redis://h/0") == (
        "OUTBOX_LISTEN_URL: must be a PostgreSQL URL"
    )
    assert refusal(OUTBOX_LISTEN_URL=DIRECT) == (
        "OUTBOX_LISTEN_URL: only a PostgreSQL outbox listens for inserts"
    )


def test_the_listen_urls_password_is_masked_in_repr() -> None:
    shown = repr(
        settings(OUTBOX_DATABASE_URL=POOLED, OUTBOX_LISTEN_URL=DIRECT.replace("@", ":pw@"))
    )
    assert ":pw@" not in shown and "***" in shown
