"""The worker, beat and the receiver, started for real without one right, stop with one line.

Nothing is sent or stored first: each stops before its first batch or request, with exit code 3
and ``outbox: <process> cannot <duty>: <right> is not granted to role <role>`` on stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.roles.conftest import ROLE_NAMES, as_role, run_as_owner
from worker.ops.grants import quote
from worker.ops.privileges import Role

BIN = Path(sys.executable).parent
CASES: dict[str, tuple[Role, str, list[str], str]] = {
    "worker": (
        "worker",
        "REVOKE UPDATE (tracking_id) ON outbox_messages FROM {role}",
        [str(BIN / "outbox-celery"), "-A", "worker", "worker", "--pool", "solo"],
        "worker cannot record: UPDATE on outbox_messages(tracking_id) "
        "is not granted to role {role}",
    ),
    "beat": (
        "worker",
        "REVOKE INSERT ON outbox_housekeeping FROM {role}",
        [str(BIN / "outbox-celery"), "-A", "worker", "beat"],
        "beat cannot run housekeeping: INSERT on outbox_housekeeping is not granted to role {role}",
    ),
    "receiver": (
        "receiver",
        "REVOKE INSERT ON outbox_delivery_reports FROM {role}",
        [str(BIN / "outbox"), "receiver", "--port", "0"],
        "receiver cannot store reports: INSERT on outbox_delivery_reports "
        "is not granted to role {role}",
    ),
}


@pytest.mark.parametrize("process", sorted(CASES))
def test_a_process_missing_a_right_stops_at_start_naming_it(
    granted_url: str, tmp_path: Path, process: str
) -> None:
    role, revoke, command, line = CASES[process]
    run_as_owner(granted_url, revoke.format(role=quote(ROLE_NAMES[role])))
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "WIRAYA_", "CELERY_"))
    }
    env.update(
        OUTBOX_DATABASE_URL=as_role(granted_url, role),
        CELERY_BROKER_URL="filesystem://",
        OUTBOX_BROKER_FOLDER=str(tmp_path / "broker"),
        WIRAYA_BASE_URL="http://127.0.0.1:9",
        OUTBOX_CALLBACK_AUTH="wiraya:0e6b3f9a71c2d458",
    )
    done = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 3, done.stderr
    assert f"outbox: {line.format(role=ROLE_NAMES[role])}\n" in done.stderr
