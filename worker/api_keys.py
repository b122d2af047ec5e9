"""An API key's fingerprint: a one-way name to remember a refused key by, without storing it."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from pydantic import SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


def key_fingerprint(api_key: str, salt: str) -> str:
    """A one-way name for an API key, to remember a refused key without storing it.

    HMAC-SHA256 keyed with the deployment's salt (Settings.fingerprint_salt), 128 bits shown:
    the same in every process of one deployment, and of no use elsewhere, unlike a bare hash of
    the key, which anyone holding a candidate key could check against a log line.
    """
    keyed = hmac.new(b"wiraya-outbox key fingerprint:" + salt.encode(), api_key.encode(), "sha256")
    return keyed.hexdigest()[:32]


def tenants_by_fingerprint(keys: Mapping[str, SecretStr], salt: str) -> dict[str, tuple[str, ...]]:
    """The tenants each key serves (several when they share one account), by its fingerprint."""
    tenants: dict[str, tuple[str, ...]] = {}
    for tenant, key in sorted(keys.items()):
        fingerprint = key_fingerprint(key.get_secret_value(), salt)
        tenants[fingerprint] = (*tenants.get(fingerprint, ()), tenant)
    return tenants


def fingerprint_salt(explicit: SecretStr | None, database_url: str) -> str:
    """The key of the API key's fingerprint: OUTBOX_KEY_FINGERPRINT_SALT, else the database's
    location (host, port, database; never the user or password), which every process of one
    deployment names alike whatever its role, and which sets deployments apart."""
    if explicit is not None:
        return explicit.get_secret_value()
    try:
        url = make_url(database_url)
    except ArgumentError:
        return database_url
    return f"{url.get_backend_name()}://{url.host or ''}:{url.port or ''}/{url.database or ''}"
