"""docker-compose's roles for real: deploy/postgres/roles.sh's SQL, run by psql as the image's
entrypoint runs it, then the migrations as the owner it creates (not a superuser), `outbox grants
--apply` as that owner, and the CLI as the operator.

The script's role and database names get this run's pid, so that parallel runs do not meet in
the cluster; its statements are otherwise those the postgres container runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator

import psycopg
import pytest
from alembic import command

from tests.conftest import POSTGRES_URL, ROOT, alembic_config, service_missing, with_database
from tests.integration.roles.conftest import owner_dsn, run_as_owner
from worker.ops.cli import main

SCRIPT = ROOT / "deploy" / "postgres" / "roles.sh"
PID = os.getpid()
ROLES = ("owner", "worker", "receiver", "operator", "metrics", "producer")
DATABASE = f"compose_roles_{PID}"


def role(name: str) -> str:
    return f"compose_{name}_{PID}"


def script_sql() -> str:
    """The SQL roles.sh hands psql, with this run's names."""
    body = re.search(r"<<'SQL'\n(.*?)\nSQL\n", SCRIPT.read_text(), re.DOTALL)
    assert body is not None
    sql = re.sub(r"\boutbox_(\w+)", lambda m: role(m[1]), body[1])
    return sql.replace("DATABASE outbox", f"DATABASE {DATABASE}")


@pytest.fixture
def compose_database(postgres_template: str) -> Iterator[str]:
    psql = shutil.which("psql")
    if psql is None:
        service_missing("psql", FileNotFoundError("not on PATH"))
    admin = with_database(POSTGRES_URL, "test")
    run_as_owner(admin, f"CREATE DATABASE {DATABASE}")
    url = with_database(POSTGRES_URL, DATABASE)
    env = {**os.environ, **{f"DB_{name.upper()}_PASSWORD": f"pw-{name}" for name in ROLES}}
    try:
        done = subprocess.run(
            [str(psql), "-v", "ON_ERROR_STOP=1", "-q", owner_dsn(url)],
            input=script_sql(),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        yield url
    finally:
        run_as_owner(admin, f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        for name in ROLES:
            run_as_owner(admin, f"DROP ROLE IF EXISTS {role(name)}")


def test_the_owner_migrates_and_grants_and_each_service_role_does_its_job(
    compose_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def as_(name: str) -> str:
        return compose_database.replace("://postgres@", f"://{role(name)}@")

    command.upgrade(alembic_config(as_("owner")), "head")  # not a superuser
    roles = [f"--{name}={role(name)}" for name in ROLES if name != "owner"]
    assert main(["--database-url", as_("owner"), "grants", *roles, "--apply"]) == 0
    assert main(["--database-url", as_("operator"), "stats", "--json"]) == 0
    assert "permission denied" not in capsys.readouterr().err
    # The owner is no superuser: what the receiver could reach through an injection as one.
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        run_as_owner(as_("owner"), "COPY (SELECT 1) TO PROGRAM 'true'")
