"""Which proxy the client uses, read from the standard variables (no request is sent here)."""

from __future__ import annotations

import pytest

from worker.wiraya.proxies import proxy_address, proxy_for

API = "https://api.wiraya.com"
VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_no_variables_no_proxy() -> None:
    assert proxy_for(API, local=False) is None


def test_a_local_sandbox_never_gets_one(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES[:3]:
        monkeypatch.setenv(name, "http://proxy:3128")

    assert proxy_for("http://127.0.0.1:8080", local=True) is None


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"HTTPS_PROXY": "http://secure:3128"}, "http://secure:3128"),
        ({"HTTP_PROXY": "http://plain:3128"}, None),  # for http URLs only
        ({"ALL_PROXY": "http://any:3128"}, "http://any:3128"),
        (
            {"HTTPS_PROXY": "http://secure:3128", "ALL_PROXY": "http://any:3128"},
            "http://secure:3128",
        ),
        ({"https_proxy": "http://lower:1", "HTTPS_PROXY": "http://upper:2"}, "http://lower:1"),
        ({"HTTPS_PROXY": "proxy.internal:3128"}, "http://proxy.internal:3128"),
        ({"HTTPS_PROXY": "https://tls-proxy:443"}, "https://tls-proxy:443"),
    ],
)
def test_the_standard_variables_name_the_proxy(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], expected: str | None
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)

    assert proxy_for(API, local=False) == expected


@pytest.mark.parametrize(
    ("no_proxy", "exempt"),
    [
        ("api.wiraya.com", True),
        ("wiraya.com", True),
        (".wiraya.com", True),
        ("API.Wiraya.COM", True),
        ("other.com, wiraya.com", True),
        ("*", True),
        ("api.wiraya.com:443", True),
        ("api.wiraya.com:8443", False),
        ("piwiraya.com", False),
        ("wiraya.com.evil", False),
        ("", False),
    ],
)
def test_no_proxy_exempts_names_and_domains(
    monkeypatch: pytest.MonkeyPatch, no_proxy: str, exempt: bool
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)

    assert (proxy_for(API, local=False) is None) is exempt


def test_a_socks_proxy_is_refused_with_the_way_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "socks5://user:pw@proxy:1080")

    with pytest.raises(ValueError, match="NO_PROXY") as refused:
        proxy_for(API, local=False)

    assert "pw" not in str(refused.value)


def test_a_proxy_shown_in_logs_has_no_credentials() -> None:
    assert proxy_address("http://ops:s3cret@proxy.internal:3128") == "http://proxy.internal:3128"
    assert proxy_address("http://[::1]:3128") == "http://[::1]:3128"
