"""Reading a report request's body: good reports kept, bad ones refused, the field named."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from worker.errors import BodyError
from worker.reports.parsing import parse_body

NOW = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
TRACKING = "0123456789abcdef0123456789abcdef"


def _nested(depth: int) -> object:
    """An array nested ``depth`` deep: JSON parses it, but it is not a report's shape."""
    value: object = []
    for _ in range(depth):
        value = [value]
    return value


def body(payload: object) -> bytes:
    return json.dumps(payload).encode()  # orjson refuses to write what nests past 254


def good(**fields: object) -> dict[str, object]:
    return {"trackingId": TRACKING, "status": "DELIVERED", **fields}


def test_an_array_of_reports() -> None:
    batch = parse_body(
        body(
            [
                good(doneAt="2026-12-02T09:59:58Z", recipient="46701234567"),
                good(trackingId="f" * 32, status="NEXTATTEMPT", extra={"ignored": [1, 2]}),
            ]
        ),
        received_at=NOW,
    )
    assert batch.received == 2 and batch.rejected == []
    first, second = batch.reports
    assert (first.tracking_id, first.status) == (TRACKING, "DELIVERED")
    assert first.done_at == datetime(2026, 12, 2, 9, 59, 58, tzinfo=UTC)
    assert orjson.loads(first.raw)["recipient"] == "46701234567"
    assert second.done_at is None
    assert orjson.loads(second.raw)["extra"] == {"ignored": [1, 2]}  # kept as received


def test_one_report_object() -> None:
    batch = parse_body(body(good(clientMessageId="order-42")), received_at=NOW)
    assert [report.tracking_id for report in batch.reports] == [TRACKING]


@pytest.mark.parametrize(
    ("done_at", "expected"),
    [
        ("2026-12-02T09:00:00+01:00", datetime(2026, 12, 2, 8, 0, tzinfo=UTC)),
        ("2026-12-02 09:00:00", datetime(2026, 12, 2, 9, 0, tzinfo=UTC)),  # no zone: UTC
        ("2026-12-02T09:00:00.123456Z", datetime(2026, 12, 2, 9, 0, 0, 123456, tzinfo=UTC)),
        ("", None),  # a placeholder Wiraya left empty
        (None, None),
    ],
)
def test_done_at_forms(done_at: object, expected: datetime | None) -> None:
    (report,) = parse_body(body(good(doneAt=done_at)), received_at=NOW).reports
    assert report.done_at == expected


@pytest.mark.parametrize(
    ("report", "reason"),
    [
        ({"status": "DELIVERED"}, "reports[1].trackingId: missing"),
        (good(trackingId=None), "reports[1].trackingId: missing"),
        (good(trackingId=12345), "reports[1].trackingId: must be a string (got a number)"),
        (good(trackingId=""), "reports[1].trackingId: 1 to 64 letters, digits or dashes"),
        (good(trackingId="ab\x00cd"), "reports[1].trackingId: 1 to 64 letters, digits or dashes"),
        (good(trackingId="a" * 65), "reports[1].trackingId: 1 to 64 letters, digits or dashes"),
        ({"trackingId": TRACKING}, "reports[1].status: missing"),
        (good(status=["DELIVERED"]), "reports[1].status: must be a string (got an array)"),
        (good(status="delivered"), "reports[1].status: an upper-case status word"),
        (good(status="DELIVERED\n"), "reports[1].status: an upper-case status word"),
        (good(doneAt="yesterday"), "reports[1].doneAt: not an ISO 8601 time"),
        (good(doneAt=1764669600), "reports[1].doneAt: must be a string (got a number)"),
        (good(doneAt="2126-12-02T10:00:00Z"), "reports[1].doneAt: more than 5 minutes ahead"),
        (good(doneAt="2026-12-02T10:06:00Z"), "reports[1].doneAt: more than 5 minutes ahead"),
        # How .NET writes its minimum date east of UTC: before year 1 once made UTC.
        (good(doneAt="0001-01-01T00:00:00+01:00"), "reports[1].doneAt: out of range"),
        (good(doneAt="9999-12-31T23:59:59-01:00"), "reports[1].doneAt: out of range"),
        (good(deep=_nested(300)), "reports[1]: nested deeper than"),
        (good(doneAt="1999-12-31T23:59:59Z"), "reports[1].doneAt: before 2000"),
        (good(recipient=46701234567), "reports[1].recipient: must be a string (got a number)"),
        (good(clientMessageId=True), "reports[1].clientMessageId: must be a string (got a bool"),
        (good(recipient="4" * 201), "reports[1].recipient: at most 200 characters"),
        ("DELIVERED", "reports[1]: not a JSON object (got a string)"),
        (None, "reports[1]: not a JSON object (got null)"),
        (good(notes="x" * 20_000), "reports[1]: larger than 16384 bytes"),
    ],
)
def test_a_bad_report_is_refused_alone_naming_the_field(report: object, reason: str) -> None:
    batch = parse_body(body([good(), report, good(trackingId="e" * 32)]), received_at=NOW)
    assert batch.received == 3
    assert [r.tracking_id for r in batch.reports] == [TRACKING, "e" * 32]
    (rejected,) = batch.rejected
    assert rejected.index == 1
    assert rejected.reason.startswith(reason), rejected.reason


def test_a_lone_report_is_named_without_an_index() -> None:
    batch = parse_body(body({"status": "DELIVERED"}), received_at=NOW)
    assert [r.reason for r in batch.rejected] == ["report.trackingId: missing"]


def test_unknown_statuses_are_kept_as_sent() -> None:
    (report,) = parse_body(body(good(status="EXPIRED_AT_OPERATOR")), received_at=NOW).reports
    assert report.status == "EXPIRED_AT_OPERATOR"


def test_nul_and_control_characters_in_unknown_fields_are_kept_escaped() -> None:
    (report,) = parse_body(body(good(note="a\x00b\x1fc")), received_at=NOW).reports
    assert "\x00" not in report.raw  # JSON text escapes it: a database text column takes it
    assert orjson.loads(report.raw)["note"] == "a\x00b\x1fc"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "the body is empty"),
        (b"   ", "the body is not JSON"),
        (b"trackingId=abc&status=DELIVERED", "the body is not JSON"),
        (b'[{"trackingId": "abc"', "the body is not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "the body is not JSON"),
        (b'"DELIVERED"', "the body must be a JSON array of reports or one report object"),
        (b"42", "the body must be a JSON array of reports or one report object (got a number)"),
        (b"\xff\xfe[]", "the body is not JSON"),
    ],
)
def test_a_body_that_is_not_json_or_not_that_shape_is_refused(payload: bytes, reason: str) -> None:
    with pytest.raises(BodyError) as caught:
        parse_body(payload, received_at=NOW)
    assert str(caught.value).startswith(reason), str(caught.value)


def test_an_empty_array_is_an_empty_batch() -> None:
    batch = parse_body(b"[]", received_at=NOW)
    assert (batch.received, batch.reports, batch.rejected) == (0, [], [])


def test_ten_thousand_reports() -> None:
    reports = [good(trackingId=f"{n:032x}", doneAt="2026-12-02T09:00:00Z") for n in range(10_000)]
    batch = parse_body(body(reports), received_at=NOW)
    assert len(batch.reports) == 10_000 and batch.rejected == []


def test_a_done_at_just_ahead_of_the_clock_is_kept() -> None:
    ahead = (NOW + timedelta(minutes=4)).isoformat()  # a sender's clock a little ahead
    (report,) = parse_body(body(good(doneAt=ahead)), received_at=NOW).reports
    assert report.done_at == NOW + timedelta(minutes=4)
