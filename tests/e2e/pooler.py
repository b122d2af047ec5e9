"""PgBouncer in transaction pooling mode for the end-to-end tests: its command line and config.

The pooler under test shares few server connections among many clients, so consecutive
transactions of one client land on different server connections, as behind a busy pooler in
production. Prepared-statement support (PgBouncer 1.21+) is switched off: the outbox must not
depend on it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from sqlalchemy.engine import make_url

SERVER_CONNECTIONS = 2  # per database and user: fewer than the clients, so they share


def pgbouncer_binary() -> str:
    """The pgbouncer program; FileNotFoundError when it is not installed."""
    binary = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if binary is None:
        raise FileNotFoundError("pgbouncer is not installed (Debian package pgbouncer)")
    return binary


def pgbouncer_version(binary: str) -> tuple[int, ...]:
    output = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    found = re.search(r"PgBouncer (\d+)\.(\d+)", output.stdout + output.stderr)
    return tuple(int(part) for part in found.groups()) if found else (0,)


def pgbouncer_argv(directory: Path, port: int, server_url: str) -> list[str]:
    """Write a config for a transaction pooler on ``port`` in front of ``server_url``'s server
    (every database on it, trust authentication as on the server) and return the command."""
    binary = pgbouncer_binary()
    server = make_url(server_url)
    users = directory / "pgbouncer-users.txt"
    users.write_text(f'"{server.username}" ""\n')
    settings = {
        "listen_addr": "127.0.0.1",
        "listen_port": str(port),
        "unix_socket_dir": "",
        "auth_type": "trust",
        "auth_file": str(users),
        "pool_mode": "transaction",
        "default_pool_size": str(SERVER_CONNECTIONS),
        "max_client_conn": "200",
    }
    if pgbouncer_version(binary) >= (1, 21):
        settings["max_prepared_statements"] = "0"
    config = directory / "pgbouncer.ini"
    lines = ["[databases]", f"* = host={server.host} port={server.port or 5432}", "[pgbouncer]"]
    config.write_text("\n".join([*lines, *(f"{k} = {v}" for k, v in settings.items())]) + "\n")
    # PgBouncer refuses to run as root; it reads its files before it switches user.
    run_as = ["-u", "nobody"] if os.geteuid() == 0 else []
    return [binary, *run_as, str(config)]
