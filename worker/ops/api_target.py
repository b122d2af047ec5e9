"""Which Wiraya API a process talks to: the line every outbox process logs at start.

Ops read it to tell a deployment aimed at the sandbox from one aimed at the real API. The key
shows as its fingerprint (the one the gate remembers a refused key by), never in clear.
"""

from __future__ import annotations

from collections.abc import Mapping

from worker.api_keys import fingerprint_salt, key_fingerprint
from worker.errors import SettingsError
from worker.settings import ApiSettings, database_url_from_environ


def describe(settings: ApiSettings, database_url: str) -> str:
    """``Wiraya API <base URL> (key fingerprint <32 hex>)``, or the sandbox's "no key"."""
    if settings.wiraya_api_key is None:
        key = "no key: a local sandbox"
    else:
        salt = fingerprint_salt(settings.key_fingerprint_salt, database_url)
        key = f"key fingerprint {key_fingerprint(settings.api_key, salt)}"
    return f"Wiraya API {settings.wiraya_base_url} ({key})"


def describe_environ(environ: Mapping[str, str] | None = None) -> str:
    """The same for a process that does not call the API itself (it never stops on it)."""
    try:
        return describe(ApiSettings.from_environ(environ), database_url_from_environ(environ))
    except SettingsError as error:
        return f"Wiraya API not configured ({error})"
