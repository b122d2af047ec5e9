"""WIRAYA_API_KEYS: each tenant's key, from the variable or a mounted file; errors name the
variable and the tenant, never a key; a tenant without a key of its own uses WIRAYA_API_KEY."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.dispatch.tenant_senders import no_key_reason
from worker.errors import SettingsError
from worker.settings import Settings

REMOTE = {"WIRAYA_BASE_URL": "https://api.wiraya.com"}


def test_each_tenant_has_its_own_key_and_the_others_the_default_one() -> None:
    settings = Settings.from_environ(
        {**REMOTE, "WIRAYA_API_KEYS": "clinic=k1==, shop = k2", "WIRAYA_API_KEY": "kd"}
    )
    assert settings.tenant_api_key("clinic") == "k1=="  # split at the first "="
    assert settings.tenant_api_key("shop") == "k2"
    assert settings.tenant_api_key("town") == "kd"
    assert settings.tenant_api_key("") == "kd"
    assert "k1" not in repr(settings) and "k2" not in repr(settings)


def test_without_a_default_key_an_unnamed_tenant_has_none() -> None:
    settings = Settings.from_environ({**REMOTE, "WIRAYA_API_KEYS": "clinic=k1"})
    assert settings.tenant_api_key("clinic") == "k1"
    assert settings.tenant_api_key("town") is None
    reason = no_key_reason("town")
    assert "tenant 'town'" in reason and "k1" not in reason


def test_the_keys_may_come_from_a_mounted_file(tmp_path: Path) -> None:
    secret = tmp_path / "keys"
    secret.write_text("clinic=k1\nshop=k2\n")
    settings = Settings.from_environ({**REMOTE, "WIRAYA_API_KEYS_FILE": str(secret)})
    assert (settings.tenant_api_key("clinic"), settings.tenant_api_key("shop")) == ("k1", "k2")


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("clinic=secret-one,clinic=secret-two", "tenant 'clinic' is named twice"),
        ("clinic=", "tenant 'clinic': the key must be printable ASCII"),
        ("clinic=secret one\x01", "tenant 'clinic': the key must be printable ASCII"),
        ("secret-one", "entry 1 must be tenant=value"),
        ("a b=secret-one", "tenant 'a b' must be letters"),
    ],
)
def test_a_bad_list_names_the_variable_and_the_tenant_never_the_key(value: str, words: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_environ({**REMOTE, "WIRAYA_API_KEYS": value})
    message = str(refused.value)
    assert message.startswith("WIRAYA_API_KEYS: ") and words in message
    assert "secret" not in message


def test_tenant_weights_are_positive_numbers_named_by_tenant() -> None:
    settings = Settings.from_environ(
        {"OUTBOX_TENANT_WEIGHTS": "clinic=2, shop=0.5", "WIRAYA_API_KEY": "k"}
    )
    assert settings.tenant_weights == {"clinic": 2.0, "shop": 0.5}
    for bad, words in (("clinic=0", "above 0"), ("clinic=lots", "must be a number")):
        with pytest.raises(SettingsError) as refused:
            Settings.from_environ({"OUTBOX_TENANT_WEIGHTS": bad, "WIRAYA_API_KEY": "k"})
        assert str(refused.value).startswith("OUTBOX_TENANT_WEIGHTS: tenant 'clinic'")
        assert words in str(refused.value)


def test_tenant_rate_limits_are_positive_rates_of_tenants_with_keys_of_their_own() -> None:
    keys = {"WIRAYA_API_KEYS": "clinic=k1,shop=k2", "WIRAYA_API_KEY": "k"}
    settings = Settings.from_environ({"OUTBOX_RATE_LIMITS": "clinic=5, shop=0.5", **keys})
    assert settings.rate_limits == {"clinic": 5.0, "shop": 0.5}
    for bad in ("clinic=0", "clinic=fast", "clinic=-1", "clinic=200000"):
        with pytest.raises(SettingsError) as refused:
            Settings.from_environ({"OUTBOX_RATE_LIMITS": bad, **keys})
        assert str(refused.value).startswith("OUTBOX_RATE_LIMITS: tenant 'clinic'")
    with pytest.raises(SettingsError) as keyless:
        Settings.from_environ({"OUTBOX_RATE_LIMITS": "town=1", **keys})
    assert "OUTBOX_RATE_LIMITS: tenant 'town' has no key of its own" in str(keyless.value)
