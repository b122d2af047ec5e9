"""The `outbox` CLI against PostgreSQL and SQLite: every command, and one clear line per error."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, text, update
from sqlalchemy.orm import Session

from models import OutboxMessage, SMSFromAlpha, SMSProject, enqueue_many, outbox_tenant_quotas
from worker.database import make_engine
from worker.dispatch import gate as gates
from worker.dispatch.gate import transitions
from worker.errors import OperatorError
from worker.ops import queries
from worker.ops.cli import main, parse_duration


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def outbox(database_url: str) -> Iterator[Engine]:
    """Eight messages: 2 pending, 1 sending (lease running), 1 sending (lease ended),
    2 accepted, 2 failed (one blocked yesterday, one that gave up an hour ago)."""
    engine = make_engine(database_url)
    with Session(engine) as session, session.begin():
        enqueue_many(
            session,
            [
                dict(
                    client_message_id=f"m{number}",
                    recipient="46701234567",
                    content=SMSProject(project_id=1, placeholders=[f"p{number}"])
                    if number % 2
                    else SMSFromAlpha(sender="Wiraya", text=f"hello {number}"),
                )
                for number in range(1, 9)
            ],
        )
    _set("m2", engine, last_error="transient: busy", attempts=1)
    _set("m3", engine, status="sending", attempts=1, locked_until=_now() + timedelta(minutes=1))
    _set("m4", engine, status="sending", attempts=1, locked_until=_now() - timedelta(minutes=1))
    for name in ("m5", "m6"):
        _set(name, engine, status="accepted", attempts=1, tracking_id="a" * 32, accepted_at=_now())
    _set(
        "m7",
        engine,
        status="failed",
        attempts=1,
        last_error="rejected: recipient is blocked",
        updated_at=_now() - timedelta(days=1),
        created_at=_now() - timedelta(days=2),
        first_due_at=_now() - timedelta(days=2),  # claimed when it fell due, two days ago
    )
    _set(
        "m8",
        engine,
        status="failed",
        attempts=10,
        last_error="gave up after 10 attempts: busy",
        updated_at=_now() - timedelta(hours=1),
    )
    yield engine
    engine.dispose()


def _set(client_message_id: str, engine: Engine, **values: Any) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(OutboxMessage)
            .where(OutboxMessage.client_message_id == client_message_id)
            .values(**values)
        )


def add_pending(engine: Engine, client_message_id: str, **values: Any) -> None:
    with Session(engine) as session, session.begin():
        enqueue_many(
            session,
            [
                dict(
                    client_message_id=client_message_id,
                    recipient="46701234567",
                    content=SMSProject(project_id=1),
                )
            ],
        )
    _set(client_message_id, engine, **values)


def _row(engine: Engine, client_message_id: str) -> Any:
    with engine.begin() as connection:
        return connection.execute(
            select(OutboxMessage.__table__).where(
                OutboxMessage.client_message_id == client_message_id
            )
        ).one()


def run(
    url: str, *argv: str, capsys: pytest.CaptureFixture[str], stdin: str | None = None
) -> tuple[int, str, str]:
    """Run `outbox --database-url URL ARGV...`; returns (exit code, stdout, stderr)."""
    if stdin is not None:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("sys.stdin", io.StringIO(stdin))
            code = main(["--database-url", url, *argv])
    else:
        code = main(["--database-url", url, *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("outbox: ")
    return lines[0]


# stats and inspect ------------------------------------------------------------------------------


def test_stats_counts_everything_the_runbook_needs(
    outbox: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(_url(outbox), "stats", "--json", capsys=capsys)
    assert code == 0
    stats = json.loads(out)
    assert stats["by_status"] == {
        "pending": 2,
        "sending": 2,
        "accepted": 2,
        "failed": 2,
        "cancelled": 0,
    }
    assert stats["due_now"] == 3  # two pending rows due now, one expired lease
    assert stats["retrying"] == 1
    assert stats["leases_in_flight"] == 1
    assert stats["expired_leases"] == 1
    assert 55 < stats["oldest_due_age_seconds"] < 600  # m4, whose lease ended a minute ago
    assert stats["lanes"]["normal"]["pending"] == 2
    assert stats["lanes"]["normal"]["due"] == 3
    assert stats["lanes"]["urgent"] == {
        "pending": 0,
        "due": 0,
        "scheduled": 0,
        "expired_leases": 0,
        "oldest_due_age_seconds": None,
        "next_due_at": None,
    }
    assert stats["estimated"] == []
    assert [r["count"] for r in stats["top_failure_reasons"]] == [1, 1]
    assert stats["gate"]["paused"] is False

    code, out, _ = run(_url(outbox), "stats", capsys=capsys)
    assert code == 0
    assert "rejected: recipient is blocked" in out
    assert "1 leases in flight, 1 expired" in out


def test_stats_shows_a_paused_gate(outbox: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    with outbox.begin() as connection:
        gates.read_gate(connection)
        transitions.count_failure_unless_answered_since(
            connection,
            started=_now(),
            now=_now(),
            reason="ServerError: HTTP 503",
            pause_until=_now() + timedelta(minutes=5),
            threshold=5,
            probe_at=_now() + timedelta(minutes=5),
        )
    code, out, _ = run(_url(outbox), "stats", capsys=capsys)
    assert code == 0
    assert "PAUSED after a failure until" in out and "ServerError: HTTP 503" in out

    code, out, _ = run(_url(outbox), "resume", capsys=capsys)
    assert code == 0
    with outbox.begin() as connection:
        gate = gates.read_gate(connection)
    assert gate.paused_until is None and gate.failures == 0


def test_inspect_shows_one_message(outbox: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(_url(outbox), "inspect", "m7", "--json", capsys=capsys)
    assert code == 0
    row = json.loads(out)
    assert row["status"] == "failed"
    assert row["last_error"] == "rejected: recipient is blocked"
    assert row["content"]["$type"] == "SMSProject"

    code, out, _ = run(_url(outbox), "inspect", "m7", capsys=capsys)
    assert code == 0
    assert "rejected: recipient is blocked" in out


HOSTILE = "\x1b]0;owned\x07\x1b[2J\u202eevil\x9b"  # a title, a clear screen, an override, CSI


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_inspect_escapes_what_a_terminal_would_obey(
    outbox: Engine, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    # A raw-SQL row may hold anything; so may a report (written by anyone with the login).
    content = {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": HOSTILE}
    _set("m8", outbox, recipient="4670" + HOSTILE, content=content, last_error=HOSTILE)
    _set("m8", outbox, status="accepted", tracking_id="b" * 32, accepted_at=_now())
    with outbox.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO outbox_delivery_reports (tracking_id, status, received_at, report) "
                "VALUES (:tracking, :status, :now, :report)"
            ),
            {"tracking": "b" * 32, "status": "ZZZ" + HOSTILE, "now": _now(), "report": HOSTILE},
        )
    code, out, _ = run(
        _url(outbox), "inspect", "m8", *(["--json"] if as_json else []), capsys=capsys
    )
    assert code == 0
    for character in "\x1b\x07\u202e\x9b":
        assert character not in out
    assert "\\u001b]0;owned" in out
    if as_json:  # still JSON, and the values read back exactly
        shown = json.loads(out)
        assert shown["recipient"] == "4670" + HOSTILE
        assert shown["delivery_reports"][0]["report"] == HOSTILE


def test_inspect_an_unknown_id_is_one_line_and_exit_1(
    outbox: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(_url(outbox), "inspect", "nope", capsys=capsys)
    assert code == 1
    assert out == ""
    assert one_error_line(err) == "outbox: no message with client_message_id 'nope'"


# retry ------------------------------------------------------------------------------------------


def test_retry_by_id_makes_a_failed_message_due_with_fresh_attempts(
    outbox: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(_url(outbox), "retry", "m8", "--yes", capsys=capsys)
    assert code == 0
    assert "retried 1 messages" in out
    row = _row(outbox, "m8")
    assert (row.status, row.attempts, row.locked_until) == ("pending", 0, None)
    assert row.next_attempt_at <= datetime.now(UTC)
    # How it failed is kept, marked so that the row does not read as a worker's retry.
    assert (
        row.last_error == "retried by an operator; it had failed: gave up after 10 attempts: busy"
    )
    assert _row(outbox, "m7").status == "failed"


def test_retry_by_error_text_and_time_range(
    outbox: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = run(_url(outbox), "retry", "--error", "BLOCKED", "--since", "2h", capsys=capsys)
    assert code == 0  # matched nothing: m7 failed a day ago
    assert _row(outbox, "m7").status == "failed"

    since = (_now() - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S")
    code, out, _ = run(
        _url(outbox),
        *("retry", "--error", "blocked", "--since", since, "--until", "12h", "--yes"),
        capsys=capsys,
    )
    assert code == 0
    assert "1 of them due for longer than OUTBOX_MAX_AGE_SECONDS" in out  # due two days ago
    assert _row(outbox, "m7").status == "pending"
    assert _row(outbox, "m8").status == "failed"


def test_since_accepts_a_duration_ago(outbox: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    for since in ("3d ago", "3 d ago", "72h ago"):
        _set("m7", outbox, status="failed")
        code, out, err = run(
            _url(outbox), "retry", "--error", "blocked", "--since", since, "--yes", capsys=capsys
        )
        assert code == 0, err
        assert "retried 1 messages" in out
    assert _row(outbox, "m7").status == "pending"


@pytest.mark.parametrize("text", ["", "   "])
def test_an_empty_error_filter_is_refused(
    outbox: Engine, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    code, _, err = run(_url(outbox), "retry", "--error", text, "--yes", capsys=capsys)
    assert code == 2
    assert "--error: give the text to look for" in one_error_line(err)
    assert _row(outbox, "m7").status == "failed"


def test_the_error_filter_ignores_case_beyond_ascii(
    outbox: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    _set("m8", outbox, last_error="rejected: Ändra mottagaren")
    code, out, _ = run(_url(outbox), "retry", "--error", "ÄNDRA", "--yes", capsys=capsys)
    assert code == 0
    assert "retried 1 messages" in out
    assert _row(outbox, "m8").status == "pending"


def test_freshly_retried_messages_are_not_retrying(
    outbox: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(_url(outbox), "retry", "--all", "--yes", capsys=capsys)[0] == 0
    code, out, _ = run(_url(outbox), "stats", "--json", capsys=capsys)
    assert code == 0
    stats = json.loads(out)
    assert stats["by_status"]["pending"] == 4
    assert stats["retrying"] == 1  # m2, sent and answered "transient"; not m7 nor m8


def test_retry_renew_age_counts_age_from_now(
    outbox: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    created = _row(outbox, "m7").created_at  # and due two days ago
    code, out, _ = run(_url(outbox), "retry", "m7", capsys=capsys, stdin="n\n")
    assert "1 of them" in out and "--renew-age" in out  # older than the max age: warned
    code, _, _ = run(_url(outbox), "retry", "m7", "--renew-age", "--yes", capsys=capsys)
    assert code == 0
    row = _row(outbox, "m7")
    assert row.first_due_at is None  # the next claim notes it anew: its age counts from now
    assert row.created_at == created


def test_retry_asks_first_and_a_no_changes_nothing(
    outbox: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(_url(outbox), "retry", "--all", capsys=capsys, stdin="n\n")
    assert code == 1
    assert "Retry 2 failed messages" in out
    assert one_error_line(err) == "outbox: nothing changed (answer y, or add --yes)"
    assert _row(outbox, "m8").status == "failed"

    code, out, _ = run(_url(outbox), "retry", "--all", capsys=capsys, stdin="y\n")
    assert code == 0
    assert "retried 2 messages" in out


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["retry"], 2, "say which messages to retry"),
        (["retry", "nope", "--yes"], 1, "no message with client_message_id 'nope'"),
        (["retry", "m1", "--yes"], 1, "message 'm1' is pending, not failed"),
        (["retry", "--since", "1h", "--until", "2h"], 2, "bad time range"),
        (["retry", "--since", "yesterday"], 2, "--since: 'yesterday' is neither"),
        (["cancel", "m5", "--yes"], 1, "message 'm5' is accepted, not pending"),
        (["prune", "--older-than", "soon"], 2, "--older-than: 'soon' is not a duration"),
    ],
)
def test_bad_requests_give_one_line_and_a_non_zero_exit(
    outbox: Engine, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, message: str
) -> None:
    got, _, err = run(_url(outbox), *argv, capsys=capsys)
    assert got == code
    assert message in one_error_line(err)


# cancel and prune -------------------------------------------------------------------------------


def test_cancel_leaves_sending_rows_alone(
    outbox: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(_url(outbox), "cancel", "--all", "--include-sent", "--yes", capsys=capsys)
    assert code == 0
    assert "cancelled 2 messages" in out
    assert _row(outbox, "m1").status == "cancelled"
    assert _row(outbox, "m3").status == "sending"
    assert _row(outbox, "m4").status == "sending"


def test_cancel_says_which_may_have_reached_wiraya_and_leaves_them(
    outbox: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    # m2 was sent once (a transient answer); a row released after a timeout gave its attempt
    # back but its request may have got through; one released after a 429 never did.
    add_pending(outbox, "t1", attempts=0, last_error="TransportError: timed out")
    add_pending(outbox, "r1", attempts=0, last_error="RateLimited: HTTP 429")
    code, out, _ = run(_url(outbox), "cancel", "--all", "--yes", capsys=capsys)
    assert code == 0
    assert "2 of them may already have reached Wiraya" in out
    assert "cancelled 2 messages" in out
    assert [_row(outbox, name).status for name in ("m1", "r1")] == ["cancelled"] * 2
    assert [_row(outbox, name).status for name in ("m2", "t1")] == ["pending"] * 2

    code, out, _ = run(_url(outbox), "cancel", "--all", "--include-sent", "--yes", capsys=capsys)
    assert code == 0
    assert "cancelled 2 messages" in out
    assert [_row(outbox, name).status for name in ("m2", "t1")] == ["cancelled"] * 2


def test_cancel_and_retry_by_priority(outbox: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    _set("m1", outbox, priority=2)
    _set("m7", outbox, priority=0)
    code, out, _ = run(_url(outbox), "cancel", "--priority", "bulk", "--yes", capsys=capsys)
    assert code == 0
    assert "cancelled 1 messages" in out
    assert _row(outbox, "m1").status == "cancelled"

    code, out, _ = run(_url(outbox), "retry", "--priority", "urgent", "--yes", capsys=capsys)
    assert code == 0
    assert "retried 1 messages" in out
    assert (_row(outbox, "m7").status, _row(outbox, "m8").status) == ("pending", "failed")

    with pytest.raises(SystemExit) as exit_info:  # argparse refuses it, naming the option
        main(["--database-url", _url(outbox), "retry", "--priority", "high", "--yes"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--priority: 'high' is not a lane: urgent, normal, bulk" in err


def test_cancel_and_retry_by_tenant(outbox: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    _set("m1", outbox, tenant="shop")
    _set("m8", outbox, tenant="shop")
    code, out, _ = run(_url(outbox), "cancel", "--tenant", "shop", "--yes", capsys=capsys)
    assert code == 0
    assert "cancelled 1 messages" in out
    assert (_row(outbox, "m1").status, _row(outbox, "m2").status) == ("cancelled", "pending")

    code, out, _ = run(_url(outbox), "retry", "--tenant", "shop", "--yes", capsys=capsys)
    assert code == 0
    assert "retried 1 messages" in out
    assert (_row(outbox, "m8").status, _row(outbox, "m7").status) == ("pending", "failed")

    with pytest.raises(SystemExit) as exit_info:  # argparse refuses it, naming the option
        main(["--database-url", _url(outbox), "retry", "--tenant", "a,b", "--yes"])
    assert exit_info.value.code == 2
    assert "--tenant: tenant 'a,b' must be letters" in capsys.readouterr().err


def test_stats_by_tenant(outbox: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    _set("m1", outbox, tenant="shop")
    _set("m8", outbox, tenant="shop")
    code, out, _ = run(_url(outbox), "stats", "--tenant", "--json", capsys=capsys)
    assert code == 0
    lines = {line["tenant"]: line for line in json.loads(out)}
    assert set(lines) == {"", "shop"}
    assert (lines["shop"]["pending"], lines["shop"]["failed"], lines["shop"]["due"]) == (1, 1, 1)
    assert (lines[""]["pending"], lines[""]["sending"], lines[""]["failed"]) == (1, 2, 1)
    assert lines["shop"]["oldest_due_at"] is not None

    code, out, _ = run(_url(outbox), "stats", "--tenant", capsys=capsys)
    assert code == 0
    assert out.splitlines()[0].split() == [
        "tenant",
        "pending",
        "sending",
        "failed",
        "cancelled",
        "due",
        "oldest",
        "due",
    ]
    assert any(line.split()[:2] == ["shop", "1"] for line in out.splitlines())


def test_prune_deletes_finished_messages_older_than_asked(
    outbox: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    _set("m5", outbox, accepted_at=_now() - timedelta(days=40))
    code, out, _ = run(_url(outbox), "prune", "--older-than", "30d", "--yes", capsys=capsys)
    assert code == 0
    assert "deleted 1 accepted messages" in out
    with outbox.begin() as connection:
        assert queries.find_message(connection, "m5") is None
        assert queries.find_message(connection, "m6") is not None

    code, out, _ = run(
        _url(outbox), "prune", "--older-than", "12h", "--status", "failed", "--yes", capsys=capsys
    )
    assert code == 0
    assert "deleted 1 failed messages" in out  # m7, failed a day ago


# the database -----------------------------------------------------------------------------------


def test_migrate_creates_the_sqlite_outbox(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'outbox.db'}"
    code, out, _ = run(url, "migrate", capsys=capsys)
    assert code == 0
    assert "is at revision" in out
    assert run(url, "migrate", capsys=capsys)[0] == 0  # idempotent
    code, out, _ = run(url, "stats", "--json", capsys=capsys)
    assert code == 0
    assert json.loads(out)["by_status"]["pending"] == 0


def test_migrate_postgres(postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(postgres_url, "migrate", capsys=capsys)
    assert code == 0
    assert "postgres" in out


def test_a_missing_sqlite_file_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'missing.db'}"
    code, _, err = run(url, "stats", capsys=capsys)
    assert code == 1
    assert "no database file at" in one_error_line(err)
    assert not (tmp_path / "missing.db").exists()


def test_an_unmigrated_database_says_to_migrate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "empty.db"
    make_engine(f"sqlite:///{path}").connect().close()
    code, _, err = run(f"sqlite:///{path}", "stats", capsys=capsys)
    assert code == 1
    assert "has no outbox table: run `outbox migrate`" in one_error_line(err)


def test_an_unreachable_database_is_one_line_without_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "postgresql+psycopg://postgres:hunter2@127.0.0.1:1/test"
    for command in (["stats"], ["inspect", "x"], ["retry", "--all", "--yes"], ["migrate"]):
        code, _, err = run(url, *command, capsys=capsys)
        assert code == 1
        line = one_error_line(err)
        assert line.startswith("outbox: cannot reach the database at postgresql+psycopg://")
        assert "hunter2" not in line and "***" in line


def test_sandbox_subcommand_keeps_its_own_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["sandbox", "--help"])
    assert exit_info.value.code == 0
    assert "--p503" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("45s", 45), ("90m", 5400), ("1h30m", 5400), ("2d", 172800)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, "--x").total_seconds() == seconds
    with pytest.raises(OperatorError):
        parse_duration("1x", "--x")


def test_the_database_url_may_come_from_a_file_and_help_says_why(
    outbox: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url_file = tmp_path / "url"
    url_file.write_text(_url(outbox) + "\n")
    assert main(["--database-url-file", str(url_file), "stats", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)
    with pytest.raises(SystemExit):
        main(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "shows in `ps`" in shown and "--database-url-file" in shown


def test_inspect_a_tenant(
    outbox: Engine, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTBOX_DAILY_QUOTAS", "shop=50")
    held = "held: daily quota used up until 2026-12-08 00:00 UTC"
    _set("m1", outbox, tenant="shop", last_error=held, next_attempt_at=_now() + timedelta(hours=3))
    _set("m2", outbox, tenant="shop")
    _set("m8", outbox, tenant="shop")
    with outbox.begin() as connection:
        connection.execute(
            insert(outbox_tenant_quotas).values(
                day=_now().date(), tenant="shop", messages=50, segments=61
            )
        )

    code, out, _ = run(_url(outbox), "inspect", "--tenant", "shop", "--json", capsys=capsys)

    assert code == 0
    shown = json.loads(out)
    assert (shown["tenant"], shown["pending"], shown["failed"], shown["due"]) == ("shop", 2, 1, 1)
    assert shown["quotas"] == [{"unit": "messages", "used": 50, "limit": 50}]
    assert shown["quota_day"] == _now().date().isoformat()
    waiting = [(line["client_message_id"], line["policy"]) for line in shown["waiting"]]
    assert [key for key, _ in waiting] == ["m2", "m1"]  # in the order they fall due
    assert waiting[0][1] is None and waiting[1][1].startswith("daily quota: held until ")
    code, out, _ = run(_url(outbox), "inspect", "--tenant", "shop", capsys=capsys)
    assert code == 0
    assert "quota today    messages 50 of 50 (used up)" in out
    assert "m1" in out and held in out and "m7" not in out

    # An id with --tenant: that tenant's message, or one line saying whose it is not.
    assert run(_url(outbox), "inspect", "m8", "--tenant", "shop", capsys=capsys)[0] == 0
    code, _, err = run(_url(outbox), "inspect", "m7", "--tenant", "shop", capsys=capsys)
    assert code == 1
    assert (
        one_error_line(err)
        == "outbox: message 'm7' is not tenant 'shop''s (it is the default tenant's)"
    )
    code, _, err = run(_url(outbox), "inspect", capsys=capsys)
    assert code == 2 and "CLIENT_MESSAGE_ID or --tenant" in err
