"""Which proxy, if any, carries the client's requests: decided once, from the base URL's host.

Never one for a local sandbox (this machine, or a WIRAYA_SANDBOX_HOSTS host): those requests
are plain http with the key in a header, and a proxy variable set for other programs must not
route them. For the real API, the standard variables as curl and httpx read them: HTTPS_PROXY
(or HTTP_PROXY for an http URL), else ALL_PROXY, unless NO_PROXY names the host (a name, a
domain suffix such as `.wiraya.com`, or `*`); lower-case spellings win over upper-case ones.
"""

from __future__ import annotations

import urllib.request
from urllib.parse import urlsplit

PROXY_SCHEMES = ("http", "https")


def proxy_for(base_url: str, *, local: bool) -> str | None:
    """The proxy URL for requests to `base_url`, or None to connect directly.

    `local` is True for a sandbox host. ValueError names a proxy this client cannot use.
    """
    if local:
        return None
    url = urlsplit(base_url)
    proxies = urllib.request.getproxies_environment()
    chosen = proxies.get(url.scheme) or proxies.get("all")
    port = url.port or (443 if url.scheme == "https" else 80)
    if not chosen or _exempt(url.hostname or "", port, proxies.get("no", "")):
        return None
    if "://" not in chosen:
        chosen = f"http://{chosen}"  # "proxy:3128", as curl reads it
    scheme = urlsplit(chosen).scheme.lower()
    if scheme not in PROXY_SCHEMES:
        raise ValueError(
            f"proxy for {url.scheme} ({proxy_address(chosen)}): only http:// and https:// proxies "
            "are supported; set NO_PROXY to the API's host to connect directly"
        )
    return chosen


def _exempt(host: str, port: int, no_proxy: str) -> bool:
    """Whether NO_PROXY names the host: `*`, the name, or a domain it is in (`wiraya.com` and
    `.wiraya.com` both cover `api.wiraya.com`); an entry with a port covers that port only."""
    host = host.lower()
    for entry in (part.strip().lower() for part in no_proxy.split(",")):
        if entry == "*":
            return True
        name, _, entry_port = entry.lstrip(".").partition(":")
        if not name or (entry_port and entry_port != str(port)):
            continue
        if host == name or host.endswith("." + name):
            return True
    return False


def proxy_address(proxy_url: str) -> str:
    """A proxy URL fit for logs: credentials left out."""
    url = urlsplit(proxy_url)
    host = url.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{url.port}" if url.port else ""
    except ValueError:  # not a number: not worth showing
        port = ""
    return f"{url.scheme}://{host}{port}"
