"""Which API client a tenant's batch goes out through: one per key, the tenant's own or the
default one, built the first time a batch needs it (docs/tenants.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from worker.api_keys import key_fingerprint
from worker.dispatch.sending import Sender


class TenantKeys(Protocol):
    """What choosing a tenant's key needs of the settings."""

    @property
    def api_key(self) -> str: ...

    @property
    def fingerprint_salt(self) -> str: ...

    def tenant_api_key(self, tenant: str) -> str | None: ...


def no_key_reason(tenant: str) -> str:
    """Why a tenant's messages fail without being sent: named by the tenant, never a key."""
    return (
        f"no API key: tenant {tenant!r} has none in WIRAYA_API_KEYS and WIRAYA_API_KEY is not set"
    )


class TenantSenders:
    """The sender of each tenant's batches: one per key besides WIRAYA_API_KEY's."""

    def __init__(self, keys: TenantKeys, for_key: Callable[[str], Sender] | None = None) -> None:
        self.keys = keys
        self.for_key = for_key  # None: every key's batch goes through the default sender
        self._by_key: dict[str, Sender] = {}
        self._fingerprints: dict[str, str] = {}

    def has_key(self, tenant: str) -> bool:
        """Whether ``tenant`` has a key to send with: its own or WIRAYA_API_KEY."""
        return self.keys.tenant_api_key(tenant) is not None

    def key_of(self, tenant: str) -> str | None:
        """The key ``tenant``'s batches go out under: its own or WIRAYA_API_KEY (None: neither)."""
        return self.keys.tenant_api_key(tenant)

    def fingerprint(self, tenant: str) -> str:
        """The fingerprint of ``tenant``'s key, under which the gate notes its refusal
        (WIRAYA_API_KEY's for a tenant with no key: its messages fail unsent)."""
        key = self.key_of(tenant) or self.keys.api_key
        if key not in self._fingerprints:
            self._fingerprints[key] = key_fingerprint(key, self.keys.fingerprint_salt)
        return self._fingerprints[key]

    def sender(self, tenant: str) -> Sender | None:
        """The sender of ``tenant``'s batches; None for the default one (WIRAYA_API_KEY's)."""
        key = self.keys.tenant_api_key(tenant)
        if key is None or key == self.keys.api_key or self.for_key is None:
            return None
        if key not in self._by_key:
            self._by_key[key] = self.for_key(key)
        return self._by_key[key]
