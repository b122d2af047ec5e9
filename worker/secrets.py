"""Secrets as the processes read them: from a variable or the file its _FILE twin names, and
the deployment's salt for the API key's fingerprint."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


def variable(environ: Mapping[str, str], name: str) -> str:
    """``name``'s value, or else the content of the file ``name``_FILE names (a secret mounted
    as a file stays out of the environment and of `ps`), its final line break dropped; "" when
    neither is set. OSError naming the variable when the file cannot be read."""
    value = environ.get(name, "")
    path = environ.get(f"{name}_FILE", "")
    if value or not path:
        return value
    try:
        content = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise OSError(f"{name}_FILE: cannot read {path}: {reason}") from None
    return content.removesuffix("\n").removesuffix("\r")


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
