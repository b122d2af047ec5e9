"""Content types: every type accepted, every bad value of every field refused by name."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models import (
    CONTENT_TYPES,
    InvalidMessage,
    SMSFromAlpha,
    SMSProject,
    VoiceProject,
    WhatsappProject,
    parse_content,
)
from models.content import INT32_MAX

PROJECT_TYPES = ["SMSProject", "WhatsappProject", "VoiceProject"]
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def project(type_name: str = "SMSProject", **fields: Any) -> dict[str, Any]:
    return {"$type": type_name, "projectId": 123, "placeholders": ["John", "#5678"], **fields}


def alpha(**fields: Any) -> dict[str, Any]:
    return {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": "Your code is 123456", **fields}


def refused(value: object) -> InvalidMessage:
    with pytest.raises(InvalidMessage) as caught:
        parse_content(value)
    return caught.value


# --- accepted -------------------------------------------------------------------------------


def test_every_api_type_is_known() -> None:
    assert set(CONTENT_TYPES) == {"SMSProject", "WhatsappProject", "VoiceProject", "SMSFromAlpha"}
    assert CONTENT_TYPES["SMSProject"] is SMSProject
    assert CONTENT_TYPES["WhatsappProject"] is WhatsappProject
    assert CONTENT_TYPES["VoiceProject"] is VoiceProject
    assert CONTENT_TYPES["SMSFromAlpha"] is SMSFromAlpha


@pytest.mark.parametrize("type_name", PROJECT_TYPES)
def test_project_content_round_trips(type_name: str) -> None:
    content = parse_content(project(type_name))
    assert type(content) is CONTENT_TYPES[type_name]
    assert content.to_api() == {
        "$type": type_name,
        "projectId": 123,
        "placeholders": ["John", "#5678"],
    }
    assert parse_content(content.to_api()) == content


def test_the_api_documents_examples_parse() -> None:
    examples = [
        {"$type": "SMSProject", "projectId": 123, "placeholders": ["John", "Order #5678"]},
        {"$type": "WhatsappProject", "projectId": 789, "placeholders": ["Jane", "Monday"]},
        {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": "Your verification code is 123456"},
    ]
    for example in examples:
        assert parse_content(example).to_api() == example


def test_sms_from_alpha_round_trips() -> None:
    content = parse_content(alpha())
    assert isinstance(content, SMSFromAlpha)
    assert content.sender == "Wiraya"
    assert content.to_api() == alpha()


def test_python_names_build_the_same_content_as_api_names() -> None:
    built = SMSProject(project_id=123, placeholders=["John", "#5678"])
    assert built == parse_content(project())
    assert parse_content(built) is built  # a Content instance passes through


def test_placeholders_default_to_an_empty_list_and_are_always_sent() -> None:
    content = parse_content({"$type": "VoiceProject", "projectId": 7})
    assert content.to_api() == {"$type": "VoiceProject", "projectId": 7, "placeholders": []}


@pytest.mark.parametrize("sender", ["W", "Wir", "ABCDEFGHIJK", "Åsa & Co"])
def test_senders_of_one_to_eleven_characters_are_accepted(sender: str) -> None:
    assert parse_content(alpha(sender=sender)).to_api()["sender"] == sender


def test_project_id_bounds_are_accepted() -> None:
    assert parse_content(project(projectId=1)).to_api()["projectId"] == 1
    assert parse_content(project(projectId=INT32_MAX)).to_api()["projectId"] == 2_147_483_647


def test_content_is_immutable() -> None:
    content = SMSFromAlpha(sender="Wiraya", text="hi")
    with pytest.raises(ValueError, match="frozen"):
        content.text = "changed"  # type: ignore[misc]


# --- serialization --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        SMSProject(project_id=1, placeholders=["a"], next_attempt_utc="2030-01-01T10:00:00Z"),
        WhatsappProject(project_id=2),
        VoiceProject(project_id=3, placeholders=[]),
        SMSFromAlpha(sender="Wiraya", text="hello"),
    ],
    ids=lambda content: type(content).__name__,
)
def test_type_is_the_first_key_of_the_dict_and_of_the_json(content: Any) -> None:
    api = content.to_api()
    assert next(iter(api)) == "$type"
    assert api["$type"] == content.type_name
    assert json.dumps(api).startswith(f'{{"$type": "{content.type_name}", ')
    assert json.dumps(api, separators=(",", ":")).startswith('{"$type":')


def test_next_attempt_utc_is_written_in_utc_with_z() -> None:
    stockholm_summer = timezone(timedelta(hours=2))
    when = datetime(2030, 6, 1, 12, 30, 15, 999_000, tzinfo=stockholm_summer)
    content = VoiceProject(project_id=5, next_attempt_utc=when)
    assert content.to_api() == {
        "$type": "VoiceProject",
        "projectId": 5,
        "placeholders": [],
        "nextAttemptUtc": "2030-06-01T10:30:15Z",
    }
    assert '"nextAttemptUtc": "2030-06-01T10:30:15Z"' in json.dumps(content.to_api())


@pytest.mark.parametrize(
    "text", ["2030-06-01T12:30:15+02:00", "2030-06-01T10:30:15Z", "2030-06-01T10:30:15.4+00:00"]
)
def test_next_attempt_utc_text_is_normalised_to_utc_with_z(text: str) -> None:
    content = parse_content(project(nextAttemptUtc=text))
    assert content.to_api()["nextAttemptUtc"] == "2030-06-01T10:30:15Z"


def test_next_attempt_utc_is_left_out_when_not_set() -> None:
    assert "nextAttemptUtc" not in parse_content(project()).to_api()


aware_datetimes = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.integers(min_value=-14 * 60, max_value=14 * 60).map(
        lambda minutes: timezone(timedelta(minutes=minutes))
    ),
)


@given(when=aware_datetimes)
def test_any_aware_time_serializes_as_iso_utc_with_z(when: datetime) -> None:
    written = SMSProject(project_id=1, next_attempt_utc=when).to_api()["nextAttemptUtc"]
    assert ISO_UTC.match(written), written
    parsed = datetime.fromisoformat(written)
    assert parsed.tzinfo is not None and parsed.utcoffset() == timedelta(0)
    assert parsed == when.astimezone(UTC).replace(microsecond=0)
    # What was written parses back to the same content.
    assert parse_content(project(nextAttemptUtc=written)).to_api()["nextAttemptUtc"] == written


@given(
    type_name=st.sampled_from(PROJECT_TYPES),
    project_id=st.integers(min_value=1, max_value=INT32_MAX),
    placeholders=st.lists(
        # Any text but control characters (tab and newline are fine) and lone surrogates.
        st.text(
            st.characters(exclude_categories=["Cs", "Cc"], include_characters="\t\n"), max_size=30
        ),
        max_size=8,
    ),
)
def test_any_valid_project_content_survives_json(
    type_name: str, project_id: int, placeholders: list[str]
) -> None:
    content = parse_content(
        {"$type": type_name, "projectId": project_id, "placeholders": placeholders}
    )
    wire = json.dumps(content.to_api())
    assert wire.startswith(f'{{"$type": "{type_name}"')
    again = parse_content(json.loads(wire))
    assert again == content
    assert again.to_api()["placeholders"] == placeholders  # order kept


# --- refused: projectId ---------------------------------------------------------------------

BAD_PROJECT_IDS = ["12", True, False, 0, -1, -(2**31), INT32_MAX + 1, 2**63, 1.0, 12.5, None, []]


@pytest.mark.parametrize("type_name", PROJECT_TYPES)
@pytest.mark.parametrize("project_id", BAD_PROJECT_IDS, ids=repr)
def test_bad_project_ids_are_refused(type_name: str, project_id: object) -> None:
    error = refused(project(type_name, projectId=project_id))
    assert error.field == "content.projectId"
    assert str(error).startswith("content.projectId: ")


@pytest.mark.parametrize("type_name", PROJECT_TYPES)
def test_a_missing_project_id_is_refused(type_name: str) -> None:
    error = refused({"$type": type_name, "placeholders": []})
    assert (error.field, error.reason) == ("content.projectId", "Field required")


@given(st.integers().filter(lambda n: not 1 <= n <= INT32_MAX))
def test_any_project_id_outside_positive_int32_is_refused(project_id: int) -> None:
    assert refused(project(projectId=project_id)).field == "content.projectId"


def test_python_constructor_refusals_name_the_api_field() -> None:
    with pytest.raises(InvalidMessage) as caught:
        SMSProject(project_id="12")
    assert caught.value.field == "content.projectId"
    with pytest.raises(InvalidMessage) as caught:
        SMSFromAlpha(sender="TwelveChars!", text="hi")
    assert caught.value.field == "content.sender"


# --- refused: placeholders ------------------------------------------------------------------


@pytest.mark.parametrize("type_name", PROJECT_TYPES)
@pytest.mark.parametrize(
    "placeholders",
    ["John", {"name": "John"}, {"b", "a"}, ("John",), 5, None, b"John"],
    ids=repr,
)
def test_placeholders_that_are_not_a_list_are_refused(type_name: str, placeholders: object) -> None:
    assert refused(project(type_name, placeholders=placeholders)).field == "content.placeholders"


@pytest.mark.parametrize("items", [[1], ["John", None], ["John", b"x"], [["nested"]], [True]])
def test_placeholders_with_non_string_items_are_refused(items: list[object]) -> None:
    error = refused(project(placeholders=items))
    bad_index = next(index for index, item in enumerate(items) if not isinstance(item, str))
    assert error.field == f"content.placeholders.{bad_index}"


# --- refused: nextAttemptUtc ----------------------------------------------------------------


@pytest.mark.parametrize("type_name", PROJECT_TYPES)
@pytest.mark.parametrize(
    "value",
    [
        datetime(2030, 1, 1, 12, 0),  # naive
        "2030-01-01T12:00:00",  # naive text
        "2030-01-01",  # a date is not a time
        date(2030, 1, 1),
        "tomorrow",
        "",
        "2030-13-01T00:00:00Z",
        12345,  # not a Unix timestamp
        1.5,
        True,
        ["2030-01-01T00:00:00Z"],
    ],
    ids=repr,
)
def test_bad_next_attempt_utc_is_refused(type_name: str, value: object) -> None:
    assert refused(project(type_name, nextAttemptUtc=value)).field == "content.nextAttemptUtc"


def test_naive_next_attempt_utc_says_why() -> None:
    error = refused(project(nextAttemptUtc=datetime(2030, 1, 1)))
    assert "timezone" in error.reason


# --- refused: SMSFromAlpha ------------------------------------------------------------------


@pytest.mark.parametrize(
    "sender", ["TwelveChars!", "A" * 12, "A" * 100, "", " ", "   \t", None, 5, ["Wiraya"]], ids=repr
)
def test_bad_senders_are_refused(sender: object) -> None:
    assert refused(alpha(sender=sender)).field == "content.sender"


def test_a_twelve_character_sender_says_eleven_is_the_limit() -> None:
    assert "11" in refused(alpha(sender="A" * 12)).reason


@given(st.text(min_size=12, max_size=40))
def test_any_sender_longer_than_eleven_is_refused(sender: str) -> None:
    assert refused(alpha(sender=sender)).field == "content.sender"


@pytest.mark.parametrize("text", ["", " ", "\n\t ", None, 42, ["hi"]], ids=repr)
def test_bad_texts_are_refused(text: object) -> None:
    assert refused(alpha(text=text)).field == "content.text"


@pytest.mark.parametrize("missing", ["sender", "text"])
def test_missing_alpha_fields_are_refused(missing: str) -> None:
    content = alpha()
    del content[missing]
    error = refused(content)
    assert (error.field, error.reason) == (f"content.{missing}", "Field required")


# --- refused: $type, extra fields, not an object --------------------------------------------


@pytest.mark.parametrize(
    "type_name",
    ["Email", "smsproject", "SMS", "", " SMSProject", 5, None, ["SMSProject"]],
    ids=repr,
)
def test_unknown_types_are_refused(type_name: object) -> None:
    error = refused({"$type": type_name, "projectId": 1, "placeholders": []})
    assert error.field == "content.$type"
    assert "SMSProject" in error.reason  # lists the known types


def test_a_missing_type_is_refused() -> None:
    error = refused({"projectId": 1, "placeholders": []})
    assert error.field == "content.$type"


@pytest.mark.parametrize(
    ("content", "extra"),
    [
        (project("SMSProject", colour="red"), "colour"),
        (project("WhatsappProject", sender="Wiraya"), "sender"),
        (project("VoiceProject", Placeholders=[]), "Placeholders"),
        (alpha(nextAttemptUtc="2030-01-01T00:00:00Z"), "nextAttemptUtc"),  # projects only
        (alpha(projectId=1), "projectId"),
    ],
    ids=lambda value: value["$type"] if isinstance(value, dict) else value,
)
def test_extra_fields_are_refused_by_name(content: dict[str, Any], extra: str) -> None:
    error = refused(content)
    assert error.field == f"content.{extra}"
    assert "is not a field of" in error.reason


@pytest.mark.parametrize("value", ["SMSProject", None, 5, [project()], b"{}"], ids=repr)
def test_content_that_is_not_an_object_is_refused(value: object) -> None:
    assert refused(value).field == "content"


def test_field_names_that_are_not_strings_are_refused() -> None:
    assert refused({**project(), 1: "one"}).field == "content"


def test_invalid_message_is_a_value_error_with_field_and_reason() -> None:
    error = refused(project(projectId=0))
    assert isinstance(error, ValueError)
    assert error.reason in str(error)
    assert "0" in error.reason  # says what it got


def test_api_objects_use_api_field_names_only() -> None:
    # A raw-SQL row written with Python's names would reach Wiraya with unknown fields.
    error = refused({"$type": "SMSProject", "project_id": 1, "placeholders": []})
    assert error.field == "content.project_id"
    assert "projectId" in error.reason


@given(
    type_name=st.sampled_from(PROJECT_TYPES),
    project_id=st.integers(min_value=1, max_value=INT32_MAX),
    placeholders=st.lists(st.text(st.characters(codec="ascii", exclude_categories=["Cc"]))),
    when=st.none() | st.datetimes(timezones=st.timezones()),
)
def test_to_api_is_the_models_own_dump_with_type_first(
    type_name: str, project_id: int, placeholders: list[str], when: datetime | None
) -> None:
    # to_api is built by hand for speed: it must stay what the declared fields dump to.
    contents = [
        CONTENT_TYPES[type_name](
            project_id=project_id, placeholders=placeholders, next_attempt_utc=when
        ),
        SMSFromAlpha(sender="Wiraya", text=f"code {project_id}"),
    ]
    for content in contents:
        dumped = content.model_dump(mode="json", by_alias=True, exclude_none=True)
        assert content.to_api() == {"$type": content.type_name, **dumped}
        assert list(content.to_api()) == ["$type", *dumped]
