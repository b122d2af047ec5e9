"""Secrets as the processes read them: from a variable or the file its _FILE twin names."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


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
