"""WIRAYA_SANDBOX_HOSTS: the explicit opt-in that lets compose's `sandbox` host take plain http."""

from __future__ import annotations

from datetime import timedelta

import pytest

from worker.errors import SettingsError
from worker.settings import Settings
from worker.wiraya.client import WirayaClient


def test_a_named_sandbox_host_takes_plain_http_without_a_key() -> None:
    settings = Settings.from_environ(
        {"WIRAYA_BASE_URL": "http://sandbox:8080", "WIRAYA_SANDBOX_HOSTS": "Sandbox, stub"}
    )
    assert settings.sandbox_hosts == frozenset({"sandbox", "stub"})
    assert settings.wiraya_is_local
    WirayaClient.from_settings(settings).close()


def test_plain_http_to_another_host_is_still_refused() -> None:
    with pytest.raises(SettingsError, match="WIRAYA_SANDBOX_HOSTS"):
        Settings.from_environ({"WIRAYA_BASE_URL": "http://sandbox:8080"})
    with pytest.raises(ValueError, match="plain http"):
        WirayaClient("http://sandbox:8080", "key", timedelta(seconds=1), sandbox_hosts={"other"})


def test_https_needs_a_key_whatever_the_sandbox_hosts() -> None:
    with pytest.raises(SettingsError, match="WIRAYA_API_KEY"):
        Settings.from_environ(
            {"WIRAYA_BASE_URL": "https://api.wiraya.com", "WIRAYA_SANDBOX_HOSTS": "sandbox"}
        )
