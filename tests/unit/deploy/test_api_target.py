"""Every process of the compose stack logs at start which API it talks to, never the key.

Runs each service's entry point as compose runs it (`outbox-celery -A worker worker|beat`,
`celery -A worker flower`,
`outbox metrics`) on a migrated SQLite outbox, with the broker on a port nobody listens on:
the line must come at start, before anything waits for the broker.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.harness import CELERY, OUTBOX_CELERY, VENV_BIN, Service, free_port
from worker.api_keys import fingerprint_salt, key_fingerprint
from worker.ops.api_target import describe, describe_environ
from worker.settings import ApiSettings

KEY = "key-that-must-never-be-logged"
BASE_URL = "https://api.wiraya.example"
PROCESSES = {
    "worker": [OUTBOX_CELERY, "-A", "worker", "worker", "--loglevel", "INFO", "--concurrency", "1"],
    "beat": [OUTBOX_CELERY, "-A", "worker", "beat", "--loglevel", "INFO"],
    "flower": [CELERY, "-A", "worker", "flower", "--address=127.0.0.1", "--port={port}"],
    "metrics": [str(VENV_BIN / "outbox"), "metrics", "--host", "127.0.0.1", "--port", "{port}"],
}


DATABASE = "postgresql+psycopg://outbox_worker:pw@db.internal:5432/outbox"


def fingerprint(database_url: str) -> str:
    """KEY's fingerprint as a process with ``database_url`` and no explicit salt shows it."""
    api = ApiSettings.from_environ({"WIRAYA_BASE_URL": BASE_URL, "WIRAYA_API_KEY": KEY})
    return key_fingerprint(KEY, fingerprint_salt(api.key_fingerprint_salt, database_url))


def test_the_line_names_the_url_and_the_key_fingerprint_only() -> None:
    api = ApiSettings.from_environ({"WIRAYA_BASE_URL": BASE_URL, "WIRAYA_API_KEY": KEY})
    line = describe(api, DATABASE)
    assert line == f"Wiraya API {BASE_URL} (key fingerprint {fingerprint(DATABASE)})"
    sandbox = ApiSettings.from_environ({"WIRAYA_BASE_URL": "http://127.0.0.1:8080"})
    assert describe(sandbox, DATABASE) == (
        "Wiraya API http://127.0.0.1:8080 (no key: a local sandbox)"
    )


def test_the_fingerprint_is_the_deployments_whatever_the_role_and_none_elsewhere() -> None:
    operator = "postgresql://outbox_operator:other@db.internal:5432/outbox"
    assert fingerprint(operator) == fingerprint(DATABASE)
    assert fingerprint("postgresql+psycopg://outbox_worker:pw@db.other:5432/outbox") != (
        fingerprint(DATABASE)
    )
    salted = ApiSettings.from_environ(
        {"WIRAYA_BASE_URL": BASE_URL, "WIRAYA_API_KEY": KEY, "OUTBOX_KEY_FINGERPRINT_SALT": "s3"}
    )
    salt = salted.key_fingerprint_salt
    assert fingerprint_salt(salt, DATABASE) == fingerprint_salt(salt, operator) == "s3"


def test_a_process_without_api_settings_says_so() -> None:
    line = describe_environ({"WIRAYA_BASE_URL": BASE_URL})
    assert line.startswith("Wiraya API not configured (WIRAYA_API_KEY: required")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", sorted(PROCESSES))
def test_each_process_logs_its_api_at_start(name: str, sqlite_url: str, tmp_path: Path) -> None:
    argv = [part.format(port=free_port()) for part in PROCESSES[name]]
    env = {
        "OUTBOX_DATABASE_URL": sqlite_url,
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",
        "WIRAYA_BASE_URL": BASE_URL,
        "WIRAYA_API_KEY": KEY,
        "FLOWER_BASIC_AUTH": "ops:secret",
        "PATH": str(VENV_BIN),
        "PYTHONUNBUFFERED": "1",
    }
    service = Service(name, argv, tmp_path / f"{name}.log", env, tmp_path).start()
    try:
        service.wait_for_log(
            f"Wiraya API {BASE_URL} \\(key fingerprint {fingerprint(sqlite_url)}\\)"
        )
    finally:
        service.stop(grace=5)
    assert KEY not in service.log.read_text()
