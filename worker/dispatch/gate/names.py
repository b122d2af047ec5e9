"""The tenants each key serves, written by the workers on its row of outbox_key_gates.

Only a worker holds the tenants' keys (WIRAYA_API_KEYS). So that the operator commands and the
metrics can name a key's brakes by its tenants without holding a key, each worker process writes,
on its first reading of the gate, every key's tenants on the key's row (creating the row of a key
not used yet), and clears the names of the keys it holds none of (keys replaced since). Each write
is conditional on the row's names differing: a restart with the same settings writes nothing, and
no batch ever writes them.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Connection, update

from models.databases import database_of
from worker.api_keys import tenants_by_fingerprint
from worker.dispatch.gate.state import key_gates
from worker.settings import Settings

SEPARATOR = ","  # no tenant name holds one: WIRAYA_API_KEYS separates its pairs by it


def key_names(settings: Settings, default_key: str) -> dict[str, str]:
    """The tenants each tenant's own key serves, sorted and joined, by the key's fingerprint;
    WIRAYA_API_KEY's (``default_key``) has no row: its brakes are the gate row's."""
    serving = tenants_by_fingerprint(settings.wiraya_api_keys, settings.fingerprint_salt)
    return {
        key: SEPARATOR.join(sorted(tenants))
        for key, tenants in serving.items()
        if key != default_key
    }


def tenants_of(stored: str) -> tuple[str, ...]:
    """The tenants a row's names hold (none: no worker names the key now)."""
    return tuple(stored.split(SEPARATOR)) if stored else ()


def write_names(connection: Connection, names: Mapping[str, str]) -> None:
    """Each key's row holds ``names`` (created with them when missing), and a key not among
    them no tenant; every write is conditional on the names the row holds."""
    insert = database_of(connection).insert
    rows = key_gates.c
    for key, tenants in sorted(names.items()):
        connection.execute(
            insert(key_gates).values(fingerprint=key, tenants=tenants).on_conflict_do_nothing()
        )
        renamed = update(key_gates).where(rows.fingerprint == key, rows.tenants != tenants)
        connection.execute(renamed.values(tenants=tenants))
    unnamed = update(key_gates).where(rows.tenants != "", rows.fingerprint.not_in(list(names)))
    connection.execute(unnamed.values(tenants=""))


class KeyNames:
    """One worker process's key names: written once, on its first reading of the gate."""

    def __init__(self, settings: Settings, default_key: str) -> None:
        self.names = key_names(settings, default_key)
        self.written = False

    def write_once(self, connection: Connection) -> None:
        """Write the names on the first call (the process's first reading), never after."""
        if not self.written:
            write_names(connection, self.names)
            self.written = True
