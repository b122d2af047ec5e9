"""`outbox migrate`: concurrent runs serialize and all succeed; every error is one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from tests.conftest import POSTGRES_URL, _admin, with_database
from worker.database import make_engine

OUTBOX = str(Path(sys.executable).with_name("outbox"))
ROUNDS = 6
TABLES = {"outbox_messages", "outbox_dispatch_gate", "alembic_version"}


def migrate_together(url: str, copies: int = 2) -> list[tuple[int, str]]:
    """Start ``copies`` real `outbox migrate` processes at once; their exit codes and output."""
    environment = dict(os.environ, OUTBOX_DATABASE_URL=url)
    processes = [
        subprocess.Popen(
            [OUTBOX, "migrate"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=environment,
        )
        for _ in range(copies)
    ]
    return [(process.wait(timeout=120), process.communicate()[0]) for process in processes]


def head_of(url: str) -> str:
    engine = make_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
        with engine.connect() as connection:
            return str(connection.scalar(text("SELECT version_num FROM alembic_version")))
    finally:
        engine.dispose()


# Six rounds of two real processes, each round a whole upgrade: minutes on a busy machine.
@pytest.mark.timeout(360)
def test_two_migrations_at_once_on_postgres_both_succeed(postgres_template: str) -> None:
    heads = set()
    for number in range(ROUNDS):
        name = f"outbox_migrate_{os.getpid()}_{number}"
        _admin(f"DROP DATABASE IF EXISTS {name}")
        _admin(f"CREATE DATABASE {name}")
        url = with_database(POSTGRES_URL, name)
        try:
            results = migrate_together(url)
            for code, output in results:
                assert code == 0, output
                assert "is at revision" in output
            heads.add(head_of(url))
        finally:
            _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    assert len(heads) == 1


@pytest.mark.timeout(360)
def test_two_migrations_at_once_on_sqlite_both_succeed(tmp_path: Path) -> None:
    heads = set()
    for number in range(ROUNDS):
        url = f"sqlite:///{tmp_path / f'round-{number}' / 'outbox.db'}"
        for code, output in migrate_together(url):
            assert code == 0, output
            assert "is at revision" in output
        heads.add(head_of(url))
    assert len(heads) == 1


def one_line(url: str) -> str:
    environment = dict(os.environ, OUTBOX_DATABASE_URL=url)
    done = subprocess.run(
        [OUTBOX, "migrate"], capture_output=True, text=True, env=environment, timeout=60
    )
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("outbox: ")
    return lines[0]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("not a url", "OUTBOX_DATABASE_URL: cannot use"),
        ("nosuchdriver://x/y", "OUTBOX_DATABASE_URL: cannot use"),
        ("postgresql+psycopg://postgres:hunter2@127.0.0.1:1/test", "cannot reach the database"),
    ],
)
def test_a_bad_url_or_an_unreachable_server_is_one_line(url: str, expected: str) -> None:
    line = one_line(url)
    assert expected in line
    assert "hunter2" not in line


def test_a_sqlite_folder_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    line = one_line(f"sqlite:///{tmp_path / 'a-file' / 'sub' / 'outbox.db'}")
    assert "cannot create the folder" in line and "a-file" in line
