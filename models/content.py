"""The message content types of EnqueueCommunications, validated, serialized with "$type" first."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictInt,
    StrictStr,
    ValidationError,
    field_serializer,
    field_validator,
)
from pydantic.alias_generators import to_camel

from models.errors import InvalidMessage

INT32_MAX = 2**31 - 1
SENDER_MAX_LENGTH = 11

ProjectId = Annotated[StrictInt, Field(gt=0, le=INT32_MAX)]
# A list, not any iterable: a set would send the template's values in a random order.
Placeholders = Annotated[list[StrictStr], Strict()]


def _date_text_or_datetime(value: object) -> object:
    """Refuse numbers, which pydantic would otherwise read as Unix timestamps."""
    if not isinstance(value, str | datetime):
        raise ValueError("must be an ISO 8601 date with a timezone")
    return value


UtcDate = Annotated[AwareDatetime, BeforeValidator(_date_text_or_datetime)]


class Content(BaseModel):
    """Base of every content type: immutable, API field names as aliases, no unknown fields."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, alias_generator=to_camel
    )
    type_name: ClassVar[str]

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise invalid_content(exc, type(self)) from None

    def to_api(self) -> dict[str, Any]:
        """The API's ``content`` object, ``$type`` first as Wiraya's ASP.NET server requires."""
        body = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return {"$type": self.type_name, **body}


class _ProjectContent(Content):
    """A pre-approved project template filled with placeholder values."""

    project_id: ProjectId
    placeholders: Placeholders = Field(default_factory=list)
    next_attempt_utc: UtcDate | None = None

    @field_serializer("next_attempt_utc")
    def _utc_with_z(self, value: datetime | None) -> str | None:
        if value is None:
            return None
        return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class SMSProject(_ProjectContent):
    """An SMS from a project template."""

    type_name: ClassVar[str] = "SMSProject"


class WhatsappProject(_ProjectContent):
    """A WhatsApp message from a project template."""

    type_name: ClassVar[str] = "WhatsappProject"


class VoiceProject(_ProjectContent):
    """A voice call from a project template."""

    type_name: ClassVar[str] = "VoiceProject"


class SMSFromAlpha(Content):
    """A free-text SMS from an alphanumeric sender name."""

    type_name: ClassVar[str] = "SMSFromAlpha"
    sender: Annotated[StrictStr, Field(min_length=1, max_length=SENDER_MAX_LENGTH)]
    text: Annotated[StrictStr, Field(min_length=1)]

    @field_validator("sender", "text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


CONTENT_TYPES: dict[str, type[Content]] = {
    cls.type_name: cls for cls in (SMSProject, WhatsappProject, VoiceProject, SMSFromAlpha)
}


def parse_content(value: object) -> Content:
    """Validate an API ``content`` object (a mapping with ``$type``) or a Content instance."""
    if isinstance(value, Content):
        return value
    if not isinstance(value, Mapping):
        raise InvalidMessage("content", f"must be an object with $type, got {type(value).__name__}")
    type_name = value.get("$type")
    content_type = CONTENT_TYPES.get(type_name) if isinstance(type_name, str) else None
    if content_type is None:
        known = ", ".join(CONTENT_TYPES)
        raise InvalidMessage("content.$type", f"{type_name!r} is not one of {known}")
    fields = {key: item for key, item in value.items() if key != "$type"}
    bad_keys = [key for key in fields if not isinstance(key, str)]
    if bad_keys:
        raise InvalidMessage("content", f"field names must be strings, got {bad_keys[0]!r}")
    # An API object uses the API's names only (projectId, not project_id): anything else
    # would reach Wiraya as an unknown field.
    api_names = {field.alias or name for name, field in content_type.model_fields.items()}
    unknown = [key for key in fields if key not in api_names]
    if unknown:
        expected = ", ".join(sorted(api_names))
        raise InvalidMessage(f"content.{unknown[0]}", f"is not a field of {type_name} ({expected})")
    # Through the constructor, which names the bad field: model_validate would call it too
    # (a custom __init__), but wrap its InvalidMessage in a ValidationError about "content".
    return content_type(**fields)


def invalid_content(exc: ValidationError, content_type: type[Content]) -> InvalidMessage:
    """Turn pydantic's first error into an InvalidMessage naming the API field."""
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    if loc and loc[0] in content_type.model_fields:
        loc[0] = content_type.model_fields[loc[0]].alias or loc[0]
    path = ".".join(loc)
    reason = error["msg"].removeprefix("Value error, ")
    if "input" in error and error["type"] not in {"missing", "extra_forbidden"}:
        reason += f", got {error['input']!r}"
    return InvalidMessage(f"content.{path}" if path else "content", reason)
