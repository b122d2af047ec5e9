"""An API key's fingerprint: stable in one deployment, keyed, and never the key itself."""

from __future__ import annotations

import hashlib

from worker.api_keys import key_fingerprint


def test_key_fingerprints_are_stable_keyed_and_do_not_hold_the_key() -> None:
    fingerprint = key_fingerprint("secret-key-123", "salt")
    assert fingerprint == key_fingerprint("secret-key-123", "salt")
    assert fingerprint != key_fingerprint("secret-key-124", "salt")
    assert len(fingerprint) == 32 and "secret" not in fingerprint
    # Keyed: a bare hash of the key, which anyone with a candidate key can compute, is not it,
    # and another deployment's salt gives another fingerprint.
    assert fingerprint not in hashlib.sha256(b"secret-key-123").hexdigest()
    assert fingerprint != key_fingerprint("secret-key-123", "another deployment")
