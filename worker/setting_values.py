"""How settings read their values: seconds, host names, this machine, header values."""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, Field


def is_local_host(host: str) -> bool:
    """True for this machine: localhost and every loopback address (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# An HTTP header value as the API key needs it: visible ASCII, inner spaces and tabs only. A stray
# space from a .env file, sent, makes the HTTP library quote the key in its error.
HEADER_VALUE = re.compile(r"[\x21-\x7e]+(?:[ \t]+[\x21-\x7e]+)*")


def seconds(value: object) -> object:
    """Read a number of seconds ("30", "0.5") as a timedelta; leave other values to pydantic."""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        try:
            return timedelta(seconds=float(value))
        except (ValueError, OverflowError):  # "abc", "nan"; "inf", "1e20" (beyond timedelta)
            raise ValueError("must be a number of seconds") from None
    return value


Seconds = Annotated[timedelta, BeforeValidator(seconds), Field(gt=timedelta(0))]


def host_names(value: object) -> object:
    """Read "sandbox, wiraya-stub" as a set of lower-case host names."""
    if isinstance(value, str):
        return frozenset(name.strip().lower() for name in value.split(",") if name.strip())
    return value
