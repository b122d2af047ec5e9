"""The Wiraya client's pure parts: encoding with `$type` first, and reading every kind of answer."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.wiraya.answers import message_outcome
from worker.wiraya.client import WirayaClient, mask_recipient
from worker.wiraya.codec import (
    encode_request,
    interpret_response,
    parse_retry_after,
    serialize_content,
)
from worker.wiraya.results import (
    Accepted,
    Answered,
    BadRequest,
    BatchLimit,
    BatchTooLarge,
    Communication,
    RateLimited,
    Rejected,
    RequestFailure,
    ServerError,
    Transient,
    Unauthorized,
    Unknown,
)

TRACKING = "0123456789abcdef0123456789abcdef"


def results(**entries: object) -> bytes:
    return json.dumps({"results": entries}).encode()


# Encoding ---------------------------------------------------------------------------------------


def test_type_is_moved_first_as_jsonb_loses_key_order() -> None:
    content = {"projectId": 1, "placeholders": ["a"], "$type": "SMSProject"}

    serialized = serialize_content(content)

    assert list(serialized) == ["$type", "projectId", "placeholders"]
    assert serialized == content
    assert list(content) == ["projectId", "placeholders", "$type"]  # the input is not changed


@given(
    st.dictionaries(st.text(min_size=1).filter(lambda k: k != "$type"), st.integers(), max_size=6),
    st.integers(min_value=0, max_value=6),
)
def test_type_first_whatever_the_order(fields: dict[str, int], position: int) -> None:
    items = list(fields.items())
    items.insert(min(position, len(items)), ("$type", "SMSFromAlpha"))  # type: ignore[arg-type]
    content = dict(items)

    serialized = serialize_content(content)

    assert next(iter(serialized)) == "$type"
    assert serialized == content


def test_request_body_puts_type_first_in_every_content() -> None:
    batch = [Communication("m1", "46701234567", {"text": "hi", "sender": "Shop", "$type": "X"})]

    body = encode_request(batch)

    assert body.startswith(b'{"communications":[{"clientMessageId":"m1","recipient":"46701234567"')
    assert b'"content":{"$type":"X","text":"hi","sender":"Shop"}' in body


def test_recipients_are_masked_for_logs() -> None:
    assert mask_recipient("46701234567") == "4670****567"
    assert mask_recipient("123") == "****"


# Per-message results ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"trackingId": TRACKING, "success": True, "isTransientError": False}, Accepted(TRACKING)),
        ({"trackingId": TRACKING, "success": True}, Accepted(TRACKING)),  # flag absent on success
        ({"trackingId": TRACKING, "success": True, "newField": [1]}, Accepted(TRACKING)),
        ({"TrackingId": TRACKING, "Success": True}, Accepted(TRACKING)),  # PascalCase
        (
            {"success": False, "isTransientError": False, "errorMessage": "blocked"},
            Rejected("blocked"),
        ),
        ({"success": False, "isTransientError": True, "message": "busy"}, Transient("busy")),
    ],
)
def test_result_entries_are_read_tolerantly(entry: object, expected: object) -> None:
    assert message_outcome(entry) == expected


@pytest.mark.parametrize(
    "entry",
    [None, "yes", 3, {"success": "true", "trackingId": TRACKING}, {"success": True}],
)
def test_unreadable_or_missing_entries_are_unknown(entry: object) -> None:
    assert isinstance(message_outcome(entry), Unknown)


def test_failure_without_transient_flag_is_retried_not_failed() -> None:
    outcome = message_outcome({"success": False, "trackingId": None})

    assert isinstance(outcome, Transient)
    assert "isTransientError absent" in outcome.reason


def test_every_sent_message_gets_an_outcome_even_when_missing_from_results() -> None:
    body = results(a={"trackingId": TRACKING, "success": True}, stranger={"success": True})

    result = interpret_response(200, {}, body, ["a", "b"])

    assert result == Answered(
        {"a": Accepted(TRACKING), "b": Unknown("missing from the API's results")}
    )


# Request-level answers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (200, b"<html>oops</html>", ServerError),
        (200, b'{"results": [1, 2]}', ServerError),
        (200, b'{"results": {"a": {"succ', ServerError),
        (401, b"Invalid API Key", Unauthorized),
        (403, b"", Unauthorized),
        (413, b"", BatchTooLarge),
        (400, b'{"bulkItemLimitExceeded": true}', BatchTooLarge),
        (400, b'{"message": "Invalid input format: recipient"}', BadRequest),
        (422, b'{"message": "bad"}', BadRequest),
        (500, b'{"message": "An error has occurred."}', ServerError),
        (502, b"<html><head><title>502 Bad Gateway</title></head></html>", ServerError),
        (404, b"Not found", ServerError),
    ],
)
def test_status_and_body_decide_the_request_outcome(status: int, body: bytes, kind: type) -> None:
    result = interpret_response(status, {}, body, ["a"])

    assert type(result) is kind
    assert isinstance(result, RequestFailure)
    assert result.reason


def test_bad_request_keeps_the_api_reason_trimmed() -> None:
    body = b'{"message": "Invalid input format:   recipient\\n must be an MSISDN"}'

    result = interpret_response(400, {}, body, ["a"])

    assert result == BadRequest("Invalid input format: recipient must be an MSISDN")


def test_html_error_pages_are_summarised_by_their_title() -> None:
    body = b"<html>\r\n<head><title>502 Bad Gateway</title></head><body>...</body></html>"

    result = interpret_response(502, {"content-type": "text/html"}, body, ["a"])

    assert result == ServerError("HTTP 502: HTML page: 502 Bad Gateway", 502)


def test_long_reasons_are_clipped() -> None:
    result = interpret_response(400, {}, b'{"message": "' + b"x" * 5000 + b'"}', ["a"])

    assert isinstance(result, BadRequest)
    assert len(result.reason) == 500


# 400s: only the API's own JSON is validation; "too large" only from its JSON or a 413 ------------

NGINX_400 = (
    b"<html>\r\n<head><title>400 Request Header Or Cookie Too Large</title></head>\r\n<body>\r\n"
    b"<center><h1>400 Bad Request</h1></center>\r\n</body>\r\n</html>\r\n"
)


@pytest.mark.parametrize(
    "body",
    [
        NGINX_400,
        b"",
        b"   ",
        b"Bad Request",
        b"Request too large",
        b"too many communications in the batch",
        b'{"message": "unterminated',
        b"<html><body>blocked by the firewall</body></html>",
    ],
    ids=["nginx-html", "empty", "blank", "text", "text-too-large", "text-too-many", "cut", "html"],
)
def test_a_400_that_is_not_the_apis_json_is_a_request_level_failure(body: bytes) -> None:
    result = interpret_response(400, {"content-type": "text/html"}, body, ["a"])

    assert type(result) is ServerError
    assert result.status == 400
    assert result.reason.startswith("HTTP 400")


def test_the_nginx_header_too_large_page_is_not_a_batch_too_large() -> None:
    result = interpret_response(400, {}, NGINX_400, ["a"])

    assert result == ServerError(
        "HTTP 400 not from the API (not JSON): HTML page: 400 Request Header Or Cookie Too Large",
        400,
    )


@pytest.mark.parametrize(
    "body",
    [
        b'{"message": "Invalid input format: communications[0].recipient"}',
        b'{"Message": "The request is invalid.", "ModelState": {"x": ["bad"]}}',
        b'"Invalid input format"',
        b'{"errors": {"communications[0].recipient": ["required"]}, "title": "invalid"}',
    ],
)
def test_the_apis_json_400_is_validation(body: bytes) -> None:
    result = interpret_response(400, {"content-type": "application/json"}, body, ["a"])

    assert type(result) is BadRequest
    assert result.reason


def test_asp_net_validation_errors_are_summarised_field_by_field() -> None:
    body = (
        b'{"title": "One or more validation errors occurred.", '
        b'"errors": {"recipient": ["required", "an MSISDN"]}}'
    )

    result = interpret_response(400, {}, body, ["a"])

    assert result == BadRequest(
        "One or more validation errors occurred.; recipient: required, an MSISDN"
    )


@pytest.mark.parametrize(
    "body",
    [
        b'{"bulkItemLimitExceeded": true}',
        b'{"BulkItemLimitExceeded": true}',
        b'{"BULKITEMLIMITEXCEEDED": true, "message": "at most 100"}',
    ],
)
def test_bulk_item_limit_exceeded_is_too_many_items(body: bytes) -> None:
    result = interpret_response(400, {}, body, ["a"])

    assert isinstance(result, BatchTooLarge)
    assert result.limit is BatchLimit.ITEMS


@pytest.mark.parametrize(
    "body",
    [b'{"bulkItemLimitExceeded": false}', b'{"bulkItemLimitExceeded": "true"}', b'{"x": true}'],
)
def test_anything_short_of_bulk_item_limit_exceeded_true_is_validation(body: bytes) -> None:
    assert type(interpret_response(400, {}, body, ["a"])) is BadRequest


@pytest.mark.parametrize("body", [b"", b"<html>413</html>", b'{"bulkItemLimitExceeded": true}'])
def test_a_413_is_too_many_bytes_whatever_its_body(body: bytes) -> None:
    result = interpret_response(413, {}, body, ["a"])

    assert isinstance(result, BatchTooLarge)
    assert result.limit is BatchLimit.BYTES


def test_rate_limit_reads_retry_after_in_seconds_whatever_the_header_case() -> None:
    result = interpret_response(429, {"retry-after": "17"}, b"", ["a"])

    assert result == RateLimited("HTTP 429: (empty body)", timedelta(seconds=17))


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)

    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == timedelta(seconds=30)
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == timedelta(0)
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_outcomes_match_by_type() -> None:
    def action(result: object) -> str:
        match result:
            case RateLimited(retry_after=wait):
                return f"wait {wait}"
            case Unauthorized(status=status):
                return f"alarm {status}"
            case RequestFailure(reason=reason):
                return f"retry: {reason}"
        return "?"

    assert action(RateLimited("429", timedelta(seconds=2))) == "wait 0:00:02"
    assert action(Unauthorized("no", 403)) == "alarm 403"
    assert action(ServerError("boom", 503)) == "retry: boom"


# Construction -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["http://api.wiraya.com", "http://10.0.0.5:8080", "ftp://localhost", "localhost:8080"]
)
def test_the_key_is_never_sent_over_plain_http_to_another_host(url: str) -> None:
    with pytest.raises(ValueError, match="base_url"):
        WirayaClient(url, "secret", timedelta(seconds=5))


@pytest.mark.parametrize(
    "url",
    ["https://api.wiraya.com", "http://localhost:8080", "http://127.0.0.1", "http://[::1]:80"],
)
def test_https_and_local_http_are_allowed(url: str) -> None:
    WirayaClient(url, "secret", timedelta(seconds=5)).close()


def test_a_named_sandbox_host_may_use_plain_http() -> None:
    WirayaClient(
        "http://sandbox:8080", "k", timedelta(seconds=5), sandbox_hosts={"sandbox"}
    ).close()


def test_an_empty_key_is_refused() -> None:
    with pytest.raises(ValueError, match="api_key"):
        WirayaClient("https://api.wiraya.com", "", timedelta(seconds=5))
