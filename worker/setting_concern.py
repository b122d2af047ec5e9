"""What every settings class is: frozen, read by the variable's name, from a mapping."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy.engine import make_url

from worker.errors import SettingsError
from worker.secrets import variable


class _Concern(BaseModel):
    """Settings of one concern: frozen, read by alias (the variable's name), from a mapping."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Self:
        """Build settings from an environment mapping (os.environ by default) and overrides.

        Only this class's variables are read: the others belong to another concern.
        """
        environ = os.environ if environ is None else environ
        aliases = {field.alias for field in cls.model_fields.values() if field.alias}
        try:
            values: dict[str, Any] = {
                name: value for name in aliases if (value := variable(environ, name))
            }
        except OSError as error:
            raise SettingsError(str(error)) from None
        values.update(overrides)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            message = _describe(exc)
        # Raised outside the except block so that no pydantic error, whose text echoes input
        # values, rides along as __context__ into logs and error trackers.
        raise SettingsError(message)

    def __repr_args__(self) -> Any:
        # Database and broker URLs may hold passwords: show them masked, like the API key.
        for name, value in super().__repr_args__():
            if name in {"database_url", "listen_url", "broker_url"} and isinstance(value, str):
                value = make_url(value).render_as_string(hide_password=True)
            yield name, value


def _describe(exc: ValidationError) -> str:
    """One line naming the first bad variable and why, without echoing secret values."""
    error = exc.errors()[0]
    name = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if not name:
        return message
    secret = any(word in name for word in ("KEY", "AUTH", "URL", "PASSWORD", "SALT"))
    shown = "" if secret else f" (got {error.get('input')!r})"
    return f"{name}: {message}{shown}"
