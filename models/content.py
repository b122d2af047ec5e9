"""The message content types of EnqueueCommunications, validated, serialized with "$type" first."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
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
from models.text import field_name, kind, shown, text_problem

if TYPE_CHECKING:
    from models.limits import MessageLimits

INT32_MAX = 2**31 - 1
SENDER_MAX_LENGTH = 11


def _no_control_characters(value: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


MessageText = Annotated[StrictStr, AfterValidator(_no_control_characters)]
ProjectId = Annotated[StrictInt, Field(gt=0, le=INT32_MAX)]
# A list, not any iterable: a set would send the template's values in a random order.
Placeholders = Annotated[list[MessageText], Strict()]


def _date_text_or_datetime(value: object) -> object:
    """Refuse numbers, which pydantic would otherwise read as Unix timestamps."""
    if not isinstance(value, str | datetime):
        raise ValueError("must be an ISO 8601 date with a timezone")
    return value


def _in_utc(value: datetime) -> datetime:
    """The date in UTC, as the API is sent it; refused when UTC cannot hold it."""
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:00:00-05:00
        raise ValueError("is out of range in UTC") from None


UtcDate = Annotated[AwareDatetime, BeforeValidator(_date_text_or_datetime), AfterValidator(_in_utc)]


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
        """The API's ``content`` object, ``$type`` first as Wiraya's ASP.NET server requires.

        What ``model_dump(mode="json", by_alias=True, exclude_none=True)`` gives after
        ``$type``; the types below build it by hand, several times faster (the dispatcher
        screens every row it claims through this).
        """
        body = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return {"$type": self.type_name, **body}

    def check_limits(self, limits: MessageLimits) -> None:
        """Refuse text over the limits (InvalidMessage naming the field); nothing by default."""


class _ProjectContent(Content):
    """A pre-approved project template filled with placeholder values."""

    project_id: ProjectId
    placeholders: Placeholders = Field(default_factory=list)
    next_attempt_utc: UtcDate | None = None

    def to_api(self) -> dict[str, Any]:
        api: dict[str, Any] = {
            "$type": self.type_name,
            "projectId": self.project_id,
            "placeholders": list(self.placeholders),
        }
        if self.next_attempt_utc is not None:
            api["nextAttemptUtc"] = _utc_with_z(self.next_attempt_utc)
        return api

    def check_limits(self, limits: MessageLimits) -> None:
        limits.check_placeholders("content.placeholders", self.placeholders)

    @field_serializer("next_attempt_utc")
    def _serialize_next_attempt_utc(self, value: datetime | None) -> str | None:
        return None if value is None else _utc_with_z(value)


def _utc_with_z(value: datetime) -> str:
    """ISO 8601 in UTC to the second with a trailing Z, as the API's dates are written."""
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
    sender: Annotated[MessageText, Field(min_length=1, max_length=SENDER_MAX_LENGTH)]
    text: Annotated[MessageText, Field(min_length=1)]

    @field_validator("sender", "text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    def to_api(self) -> dict[str, Any]:
        return {"$type": self.type_name, "sender": self.sender, "text": self.text}

    def check_limits(self, limits: MessageLimits) -> None:
        limits.check_text("content.text", self.text)


CONTENT_TYPES: dict[str, type[Content]] = {
    cls.type_name: cls for cls in (SMSProject, WhatsappProject, VoiceProject, SMSFromAlpha)
}
# The types filled from a project template: projectId, placeholders, nextAttemptUtc.
PROJECT_TYPES: tuple[type[Content], ...] = (SMSProject, WhatsappProject, VoiceProject)
# Each type's field names as the API spells them (projectId, not project_id).
_API_NAMES: dict[type[Content], frozenset[str]] = {
    cls: frozenset(field.alias or name for name, field in cls.model_fields.items())
    for cls in CONTENT_TYPES.values()
}


def parse_content(value: object) -> Content:
    """Validate an API ``content`` object (a mapping with ``$type``) or a Content instance."""
    if isinstance(value, Content):
        return value
    if not isinstance(value, Mapping):
        raise InvalidMessage("content", f"must be an object with $type, got {kind(value)}")
    type_name = value.get("$type")
    content_type = CONTENT_TYPES.get(type_name) if isinstance(type_name, str) else None
    if content_type is None or not isinstance(type_name, str):
        known = ", ".join(CONTENT_TYPES)
        raise InvalidMessage("content.$type", f"{shown(type_name)} is not one of {known}")
    fields = dict(value)
    del fields["$type"]
    api_names = _API_NAMES[content_type]
    if not api_names.issuperset(fields):
        unknown = next(key for key in fields if key not in api_names)
        raise _unknown_field(unknown, type_name, api_names)
    # Through the constructor, which names the bad field: model_validate would call it too
    # (a custom __init__), but wrap its InvalidMessage in a ValidationError about "content".
    return content_type(**fields)


def _unknown_field(key: object, type_name: str, api_names: frozenset[str]) -> InvalidMessage:
    """A field the type does not have: an API object uses the API's names only, or it would
    reach Wiraya with an unknown field."""
    if not isinstance(key, str):
        return InvalidMessage("content", f"field names must be strings, got {shown(key)}")
    expected = ", ".join(sorted(api_names))
    name = field_name(key)
    if name is None:  # too long or unprintable to stand in a field path
        return InvalidMessage(
            "content", f"field name {shown(key)} is not a field of {type_name} ({expected})"
        )
    return InvalidMessage(f"content.{name}", f"is not a field of {type_name} ({expected})")


def invalid_content(exc: ValidationError, content_type: type[Content]) -> InvalidMessage:
    """Turn pydantic's first error into an InvalidMessage naming the API field."""
    error = exc.errors()[0]
    loc = [field_name(str(part)) or "?" for part in error["loc"]]
    if loc and loc[0] in content_type.model_fields:
        loc[0] = content_type.model_fields[loc[0]].alias or loc[0]
    path = ".".join(loc)
    reason = error["msg"].removeprefix("Value error, ")
    if "input" in error and error["type"] not in {"missing", "extra_forbidden"}:
        reason += f", got {shown(error['input'])}"
    return InvalidMessage(f"content.{path}" if path else "content", reason)
