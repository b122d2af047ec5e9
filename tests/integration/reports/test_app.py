"""The receiver's HTTP application on PostgreSQL and SQLite: auth, bodies, limits, answers."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
from sqlalchemy import Engine

from tests.integration.reports.harness import (
    accept,
    delivery,
    serving,
    stored_reports,
    tracking,
)
from worker.database import make_engine
from worker.reports.app import create_app
from worker.settings import ReceiverSettings

AUTH = "wiraya:4c1d9e7a02b85f36"
PATH = "/wiraya/callbacks"


def basic(login: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(login.encode()).decode()}


LOGIN = basic(AUTH)


def settings(url: str, **extra: str) -> ReceiverSettings:
    return ReceiverSettings.from_environ(
        {"OUTBOX_CALLBACK_AUTH": AUTH, "OUTBOX_DATABASE_URL": url, **extra}
    )


@contextmanager
def client_for(engine: Engine, url: str | None = None, **extra: str) -> Iterator[httpx.Client]:
    """The application served by uvicorn on a free port (a thread), and a client for it."""
    url = url or engine.url.render_as_string(hide_password=False)
    app = create_app(engine, settings(url, **extra))
    with serving(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        yield client


@pytest.fixture
def client(engine: Engine) -> Iterator[httpx.Client]:
    with client_for(engine) as http:
        yield http


def reports(*numbers: int, status: str = "DELIVERED") -> list[dict[str, str]]:
    return [
        {"trackingId": tracking(n), "status": status, "doneAt": "2026-12-02T10:00:05Z"}
        for n in numbers
    ]


def test_a_batch_is_stored_and_answered_once_committed(
    engine: Engine, client: httpx.Client
) -> None:
    first, second = accept(engine, 2)
    answer = client.post(PATH, content=orjson.dumps(reports(1, 2, 3)), headers=LOGIN)
    assert answer.status_code == 200
    assert answer.json() == {
        "received": 3,
        "stored": 3,
        "repeats": 0,
        "matched": 2,
        "unmatched": 1,
        "rejected": 0,
        "reasons": [],
    }
    assert delivery(engine, first)[0] == delivery(engine, second)[0] == "DELIVERED"
    assert len(stored_reports(engine)) == 3


def test_one_report_object_is_a_body_too(engine: Engine, client: httpx.Client) -> None:
    (message,) = accept(engine, 1)
    answer = client.post(PATH, content=orjson.dumps(reports(1)[0]), headers=LOGIN)
    assert answer.status_code == 200 and answer.json()["matched"] == 1
    assert delivery(engine, message)[0] == "DELIVERED"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("wiraya:4c1d9e7a02b85f37"),
        basic("wiraya:4c1d9e7a02b85f3"),  # a prefix of the password
        basic("wiraya:4c1d9e7a02b85f36x"),
        basic("Wiraya:4c1d9e7a02b85f36"),
        basic(":"),
        {"Authorization": "Bearer " + base64.b64encode(AUTH.encode()).decode()},
        {"Authorization": "Basic not-base64!"},
        {"Authorization": "Basic"},
    ],
    ids=["none", "wrong", "prefix", "longer", "user-case", "empty", "bearer", "garbage", "bare"],
)
def test_missing_or_wrong_credentials_are_401_and_store_nothing(
    engine: Engine, client: httpx.Client, headers: dict[str, str]
) -> None:
    answer = client.post(PATH, content=orjson.dumps(reports(1)), headers=headers)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert stored_reports(engine) == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "the body is empty"),
        (b"<report><trackingId>1</trackingId></report>", "the body is not JSON"),
        (b"[" * 200_000, "the body is not JSON"),
        (b'"DELIVERED"', "the body must be a JSON array of reports or one report object"),
        (b'{"trackingId": "abc"}', "no report in the body is well-formed"),
        (b'[1, "x", null]', "no report in the body is well-formed"),
        (b'{"trackingId": "ab\\u0000c", "status": "DELIVERED"}', "no report in the body"),
    ],
)
def test_a_malformed_body_is_400_with_the_reason_and_stores_nothing(
    engine: Engine, client: httpx.Client, body: bytes, reason: str
) -> None:
    answer = client.post(PATH, content=body, headers=LOGIN)
    assert answer.status_code == 400
    assert answer.json()["error"].startswith(reason)
    assert stored_reports(engine) == []


def test_a_batch_with_some_malformed_reports_stores_the_good_ones(
    engine: Engine, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    (message,) = accept(engine, 1)
    body = [
        *reports(1),
        {"trackingId": tracking(2)},
        {"trackingId": 7, "status": "DELIVERED"},
        "DELIVERED",
        {"trackingId": tracking(3), "status": "DELIVERED", "doneAt": "soon"},
    ]
    with caplog.at_level(logging.WARNING, logger="worker.reports.app"):
        answer = client.post(PATH, content=orjson.dumps(body), headers=LOGIN)
    assert answer.status_code == 200  # a 4xx would make Wiraya resend the good one for ever
    assert answer.json()["stored"] == 1 and answer.json()["rejected"] == 4
    assert answer.json()["reasons"] == [
        "reports[1].status: missing",
        "reports[2].trackingId: must be a string (got a number)",
        "reports[3]: not a JSON object (got a string)",
        "reports[4].doneAt: not an ISO 8601 time such as 2026-12-02T10:00:00Z (got 'soon')",
    ]
    assert delivery(engine, message)[0] == "DELIVERED"
    logged = [record.getMessage() for record in caplog.records]
    assert any("reports[1].status: missing" in line for line in logged)


def test_one_report_out_of_range_fails_alone_and_the_others_are_stored(
    engine: Engine, client: httpx.Client
) -> None:
    # How .NET writes its minimum date east of UTC: once an OverflowError and a 500 for all.
    first, second = accept(engine, 2)
    body = [*reports(1), {**reports(2)[0], "doneAt": "0001-01-01T00:00:00+01:00"}, *reports(2)]
    answer = client.post(PATH, content=orjson.dumps(body), headers=LOGIN)
    assert answer.status_code == 200
    assert (answer.json()["stored"], answer.json()["rejected"]) == (2, 1)
    assert answer.json()["reasons"][0].startswith("reports[1].doneAt: out of range in UTC")
    assert [delivery(engine, i)[0] for i in (first, second)] == ["DELIVERED", "DELIVERED"]


def test_a_refused_report_is_logged_escaped_with_its_recipient_masked(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    hostile = "46701234567\u202e\x1b[2J9876"
    body = [*reports(1), {"trackingId": "no way", "status": "DELIVERED", "recipient": hostile}]
    with caplog.at_level(logging.WARNING, logger="worker.reports.app"):
        assert client.post(PATH, content=orjson.dumps(body), headers=LOGIN).status_code == 200
    (line,) = [r.getMessage() for r in caplog.records if "refused a report" in r.getMessage()]
    assert "\u202e" not in line and "\x1b" not in line
    assert "46701234567" not in line and "9876" in line


def test_a_made_up_report_cannot_pin_a_delivery_status(
    engine: Engine, client: httpx.Client
) -> None:
    # Once a report {"status": "ZZZ", "doneAt": now + 23 h} replaced DELIVERED for good.
    (message,) = accept(engine, 1)
    now = datetime.now(UTC)
    done = (now - timedelta(seconds=5)).isoformat()
    ahead = [(now + timedelta(hours=23)).isoformat(), (now + timedelta(minutes=4)).isoformat()]
    client.post(PATH, content=orjson.dumps(reports(1)), headers=LOGIN)
    for when in ahead:
        pin = {"trackingId": tracking(1), "status": "ZZZ", "doneAt": when}
        client.post(PATH, content=orjson.dumps([pin]), headers=LOGIN)
    assert delivery(engine, message)[0] == "DELIVERED"
    real = {"trackingId": tracking(1), "status": "NOT_DELIVERED", "doneAt": done}
    assert client.post(PATH, content=orjson.dumps([real]), headers=LOGIN).json()["stored"] == 1
    assert delivery(engine, message)[0] == "NOT_DELIVERED"  # a later real report still moves it


def test_repeats_are_answered_2xx_and_change_nothing(engine: Engine, client: httpx.Client) -> None:
    accept(engine, 1)
    body = orjson.dumps(reports(1) * 2)
    first = client.post(PATH, content=body, headers=LOGIN).json()
    second = client.post(PATH, content=body, headers=LOGIN).json()
    assert (first["stored"], first["repeats"]) == (1, 1)
    assert (second["stored"], second["repeats"]) == (0, 2)
    assert len(stored_reports(engine)) == 1


def test_ten_thousand_reports_in_one_request(engine: Engine, client: httpx.Client) -> None:
    accept(engine, 50)
    answer = client.post(PATH, content=orjson.dumps(reports(*range(1, 10_001))), headers=LOGIN)
    assert answer.status_code == 200
    assert answer.json()["stored"] == 10_000 and answer.json()["matched"] == 50
    assert len(stored_reports(engine)) == 10_000


def test_a_body_over_the_limit_is_413_and_stores_nothing(engine: Engine) -> None:
    with client_for(engine, OUTBOX_CALLBACK_MAX_BODY_BYTES="1000") as client:
        big = orjson.dumps(reports(*range(1, 20)))
        assert len(big) > 1000
        assert client.post(PATH, content=big, headers=LOGIN).status_code == 413

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
            yield big[:600]
            yield big[600:]

        assert client.post(PATH, content=chunks(), headers=LOGIN).status_code == 413
        assert client.post(PATH, content=orjson.dumps(reports(1)), headers=LOGIN).status_code == 200
    assert len(stored_reports(engine)) == 1


def test_only_post_is_served_there(client: httpx.Client) -> None:
    assert client.get(PATH, headers=LOGIN).status_code == 405


def test_health_reads_the_database(client: httpx.Client) -> None:
    answer = client.get("/health")
    assert (answer.status_code, answer.json()) == (200, {"ok": True, "database": "up"})


def test_a_database_that_cannot_be_reached_is_503(postgres_url: str) -> None:
    gone = make_engine(
        "postgresql+psycopg://postgres@127.0.0.1:1/test", connect_args={"connect_timeout": 2}
    )
    with client_for(gone, postgres_url) as client:
        assert client.get("/health").status_code == 503
        answer = client.post(PATH, content=orjson.dumps(reports(1)), headers=LOGIN)
    gone.dispose()
    assert answer.status_code == 503  # Wiraya resends: nothing was stored
    assert "nothing was stored" in answer.json()["error"]
