"""The Wiraya client against the sandbox over HTTP: every row of design.md §5, every fault."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from datetime import timedelta

import pytest

from sandbox.faults import Faults, Validation
from sandbox.testing import RunningSandbox, running_sandbox
from worker.ops.processes import wait_for
from worker.settings import Settings
from worker.wiraya.client import WirayaClient
from worker.wiraya.results import (
    Accepted,
    Answered,
    BadRequest,
    BatchTooLarge,
    Communication,
    MessageOutcome,
    RateLimited,
    Rejected,
    SendResult,
    ServerError,
    Transient,
    TransportError,
    Unauthorized,
    Unknown,
)

KEY = "sk_live_do_not_log_me"
PROJECT = {"projectId": 7, "placeholders": ["Ada"], "$type": "SMSProject"}  # `$type` last, as jsonb


def sms(client_message_id: str, recipient: str = "46701234567") -> Communication:
    return Communication(client_message_id, recipient, PROJECT)


def outcomes(result: SendResult) -> dict[str, MessageOutcome]:
    assert isinstance(result, Answered), result
    return result.outcomes


@pytest.fixture(scope="module")
def shared() -> Iterator[RunningSandbox]:
    with running_sandbox(seed=2, api_key=KEY) as sandbox:
        yield sandbox


@pytest.fixture
def sandbox(shared: RunningSandbox) -> RunningSandbox:
    shared.set_faults(Faults())
    shared.reset()
    return shared


@pytest.fixture
def client(sandbox: RunningSandbox) -> Iterator[WirayaClient]:
    with WirayaClient(sandbox.url, KEY, timedelta(seconds=5)) as wiraya:
        yield wiraya


# Per-message outcomes ---------------------------------------------------------------------------


def test_accepted_messages_carry_the_ledgers_tracking_id(
    client: WirayaClient, sandbox: RunningSandbox
) -> None:
    result = outcomes(client.send([sms("a"), sms("b")]))

    ledger = sandbox.ledger()
    assert result == {key: Accepted(ledger[key].tracking_id or "") for key in ("a", "b")}
    assert len({ledger["a"].tracking_id, ledger["b"].tracking_id}) == 2


def test_a_permanent_failure_is_rejected_with_the_apis_reason(client: WirayaClient) -> None:
    result = outcomes(client.send([sms("p", "46700000001"), sms("ok")]))

    assert result["p"] == Rejected("recipient is blocked (sandbox test recipient ...0000001)")
    assert isinstance(result["ok"], Accepted)


def test_transient_failures_until_the_third_attempt_then_accepted(client: WirayaClient) -> None:
    answers = [outcomes(client.send([sms("t", "46700000002")]))["t"] for _ in range(3)]

    assert [type(answer) for answer in answers] == [Transient, Transient, Accepted]


def test_a_transient_forever_recipient_stays_transient(client: WirayaClient) -> None:
    answers = {type(outcomes(client.send([sms("f", "46700000003")]))["f"]) for _ in range(4)}

    assert answers == {Transient}


def test_a_message_missing_from_results_is_unknown_and_a_resend_finds_it(
    client: WirayaClient, sandbox: RunningSandbox
) -> None:
    first = outcomes(client.send([sms("gone", "46700000004"), sms("here")]))
    second = outcomes(client.send([sms("gone", "46700000004")]))

    assert first["gone"] == Unknown("missing from the API's results")
    assert isinstance(first["here"], Accepted)
    entry = sandbox.ledger()["gone"]
    assert second["gone"] == Accepted(entry.tracking_id or "")
    assert entry.times_received == 2


def test_per_message_validation_rejects_only_the_bad_message(
    client: WirayaClient, sandbox: RunningSandbox
) -> None:
    sandbox.set_faults(validation=Validation.MESSAGE)
    bad = Communication(
        "bad", "46701234567", {"$type": "SMSFromAlpha", "sender": "x" * 12, "text": "t"}
    )

    result = outcomes(client.send([bad, sms("good")]))

    assert result["bad"] == Rejected("content.sender: must not exceed 11 characters")
    assert isinstance(result["good"], Accepted)


# Request-level outcomes -------------------------------------------------------------------------


def test_an_invalid_message_fails_the_batch_with_the_apis_reason(
    client: WirayaClient, sandbox: RunningSandbox
) -> None:
    result = client.send([sms("ok"), sms("bad", "+46 70-123 45 67")])

    assert isinstance(result, BadRequest)
    assert result.reason.startswith(
        "Invalid input format: communications[1] (clientMessageId 'bad')"
    )
    assert sandbox.ledger() == {}


def test_a_batch_over_the_limit_is_too_large_and_costs_nothing(
    client: WirayaClient, sandbox: RunningSandbox
) -> None:
    sandbox.set_faults(max_batch=2)

    result = client.send([sms(str(i)) for i in range(3)])

    assert isinstance(result, BatchTooLarge)
    assert "bulkItemLimitExceeded" in result.reason
    assert sandbox.ledger() == {}


def test_a_413_from_a_proxy_is_too_large(client: WirayaClient, sandbox: RunningSandbox) -> None:
    sandbox.set_faults(max_body_bytes=200)

    assert isinstance(client.send([sms(str(i)) for i in range(5)]), BatchTooLarge)


def test_a_wrong_key_is_unauthorized(sandbox: RunningSandbox) -> None:
    with WirayaClient(sandbox.url, "wrong", timedelta(seconds=5)) as wrong:
        result = wrong.send([sms("a")])

    assert result == Unauthorized("HTTP 401: Invalid API Key", 401)


def test_a_caller_not_whitelisted_is_unauthorized_403(
    client: WirayaClient, sandbox: RunningSandbox
) -> None:
    sandbox.set_faults(forbidden=True)

    result = client.send([sms("a")])

    assert isinstance(result, Unauthorized)
    assert result.status == 403


def test_429_gives_retry_after(client: WirayaClient, sandbox: RunningSandbox) -> None:
    sandbox.set_faults(rate_limit=0.2, retry_after=timedelta(seconds=17))  # one per 5 s

    first, second = client.send([sms("a")]), client.send([sms("b")])

    assert isinstance(first, Answered)
    assert isinstance(second, RateLimited)
    assert second.retry_after == timedelta(seconds=17)
    assert sandbox.stats()["rate_limited"] == 1


@pytest.mark.parametrize(
    ("faults", "status", "reason"),
    [
        (Faults(p500=1.0), 500, "HTTP 500: An error has occurred."),
        (Faults(p503=1.0), 503, "HTTP 503: The service is unavailable."),
        (Faults(p502_html=1.0), 502, "HTTP 502: HTML page: 502 Bad Gateway"),
        (Faults(outage=True), 503, "HTTP 503: The service is unavailable."),
    ],
)
def test_server_errors_and_html_pages_are_server_errors(
    client: WirayaClient, sandbox: RunningSandbox, faults: Faults, status: int, reason: str
) -> None:
    sandbox.set_faults(faults)

    assert client.send([sms("a")]) == ServerError(reason, status)
    assert sandbox.ledger() == {}


def test_a_cut_json_answer_is_a_server_error_though_the_work_was_done(
    client: WirayaClient, sandbox: RunningSandbox
) -> None:
    sandbox.set_faults(p_bad_json=1.0)

    result = client.send([sms("a")])

    assert isinstance(result, ServerError)
    assert "not JSON" in result.reason
    assert sandbox.ledger()["a"].tracking_id is not None


# Timeouts and dropped connections: the sandbox did the work, the client must not call it failed ---


def test_a_timeout_after_the_work_is_unknown_and_the_resend_gets_the_same_id(
    client: WirayaClient, sandbox: RunningSandbox
) -> None:
    sandbox.set_faults(slow_after_work=timedelta(seconds=5))

    with WirayaClient(sandbox.url, KEY, timedelta(milliseconds=300)) as impatient:
        timed_out = impatient.send([sms("late")])
    accepted = wait_for(lambda: sandbox.entry("late"), timeout=10, what="the late message")
    sandbox.set_faults(Faults())
    resent = client.send([sms("late")])

    assert isinstance(timed_out, TransportError)
    assert "timed out" in timed_out.reason
    assert resent == Answered({"late": Accepted(accepted.tracking_id or "")})
    assert sandbox.ledger()["late"].times_received == 2


def test_a_connection_dropped_after_the_work_is_a_transport_error(
    client: WirayaClient, sandbox: RunningSandbox
) -> None:
    sandbox.set_faults(p_drop=1.0)

    result = client.send([sms("a")])
    sandbox.set_faults(Faults())
    resent = client.send([sms("a")])

    assert isinstance(result, TransportError) and not result.unavailable  # the API had it
    assert resent == Answered({"a": Accepted(sandbox.ledger()["a"].tracking_id or "")})


def test_a_refused_connection_is_a_transport_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused

        with WirayaClient(f"http://127.0.0.1:{port}", KEY, timedelta(seconds=2)) as client:
            result = client.send([sms("a")])

    assert isinstance(result, TransportError)
    assert "ConnectError" in result.reason
    assert result.unavailable  # nothing left this host: no message of it can have drawn it


def test_latency_within_the_timeout_is_just_slower(
    client: WirayaClient, sandbox: RunningSandbox
) -> None:
    sandbox.set_faults(latency=timedelta(milliseconds=200))

    assert isinstance(outcomes(client.send([sms("a")]))["a"], Accepted)


def test_random_faults_with_a_seed_leave_each_message_accepted_once(
    client: WirayaClient, sandbox: RunningSandbox
) -> None:
    sandbox.set_faults(Faults(p500=0.2, p503=0.1, p502_html=0.1, p_drop=0.1, p_bad_json=0.1))
    pending = {f"m{i}" for i in range(40)}
    accepted: dict[str, str] = {}
    for _ in range(60):
        if not pending:
            break
        result = client.send([sms(key) for key in sorted(pending)[:10]])
        if isinstance(result, Answered):
            for key, outcome in result.outcomes.items():
                assert isinstance(outcome, Accepted)
                accepted[key] = outcome.tracking_id
                pending.discard(key)

    ledger = sandbox.ledger()
    assert not pending
    assert accepted == {key: entry.tracking_id for key, entry in ledger.items()}
    assert sandbox.stats()["requests"] > 4  # the faults really struck


# What goes over the wire, and what is logged -----------------------------------------------------


def test_the_exact_key_header_and_type_first_content_are_accepted(
    client: WirayaClient, sandbox: RunningSandbox
) -> None:
    """The sandbox checks `X-ApiKey` case-sensitively and `$type` first; PROJECT has it last."""
    assert list(PROJECT)[-1] == "$type"

    assert isinstance(outcomes(client.send([sms("a")]))["a"], Accepted)


def test_logs_never_hold_the_key_and_mask_recipients(
    client: WirayaClient, sandbox: RunningSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sandbox.set_faults(p500=1.0)

    client.send([sms("a", "46700000001")])
    sandbox.set_faults(Faults())
    client.send([sms("b", "46700000001")])

    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "HTTP 500" in text
    assert "4670****001" in text
    assert KEY not in text
    assert "46700000001" not in text


def test_from_settings_builds_a_working_client(sandbox: RunningSandbox) -> None:
    settings = Settings.from_environ(
        {"WIRAYA_BASE_URL": sandbox.url, "WIRAYA_API_KEY": KEY, "WIRAYA_TIMEOUT_SECONDS": "3"}
    )

    with WirayaClient.from_settings(settings) as client:
        assert isinstance(outcomes(client.send([sms("a")]))["a"], Accepted)


def test_an_empty_batch_sends_nothing(client: WirayaClient, sandbox: RunningSandbox) -> None:
    assert client.send([]) == Answered({})
    assert sandbox.request_count == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_opens_its_own_connections(
    client: WirayaClient, sandbox: RunningSandbox
) -> None:
    assert isinstance(client.send([sms("parent")]), Answered)  # the pool now holds a connection

    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if the inherited client works on its own sockets
        code = 1
        try:
            code = 0 if isinstance(client.send([sms("child")]), Answered) else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    after = client.send([sms("parent-again")])

    assert os.waitstatus_to_exitcode(status) == 0
    assert isinstance(after, Answered)
    assert set(sandbox.ledger()) == {"parent", "child", "parent-again"}


@pytest.mark.parametrize(
    "content",
    [None, {"$type": "SMSProject", "projectId": 2**70, "placeholders": []}, {"$type": {1, 2}}],
    ids=["not-a-dict", "huge-integer", "a-set"],
)
def test_a_message_that_cannot_be_encoded_is_a_bad_request_never_an_exception(
    client: WirayaClient, sandbox: RunningSandbox, content: object
) -> None:
    result = client.send([Communication("odd", "46701234567", content)])  # type: ignore[arg-type]

    assert isinstance(result, BadRequest)
    assert "cannot be encoded" in result.reason
    assert sandbox.request_count == 0


def test_a_key_with_a_line_break_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="api_key"):
        WirayaClient("https://api.wiraya.com", "key\r\nX-Injected: 1", timedelta(seconds=1))


def test_an_answer_larger_than_the_limit_is_not_read(
    client: WirayaClient, sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The limit lowered to 2 KiB, which 100 results exceed; reading stops just past it."""
    monkeypatch.setattr("worker.wiraya.client.MAX_ANSWER_BYTES", 2048)
    monkeypatch.setattr("worker.wiraya.codec.MAX_ANSWER_BYTES", 2048)

    result = client.send([sms(f"m{i}") for i in range(100)])

    assert isinstance(result, ServerError)
    assert "larger than" in result.reason
    assert len(sandbox.ledger()) == 100  # the work was done: the outcome stays unknown
