"""The sandbox over HTTP: the API doc's examples, validation, de-duplication, faults, ledger."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from sandbox.cli import build_parser, faults_from
from sandbox.faults import Faults, Validation
from sandbox.testing import RunningSandbox, SandboxAdmin, running_sandbox
from worker.ops.processes import wait_for

PATH = "/api/EnqueueCommunications"
HEX32 = re.compile(r"[0-9a-f]{32}")
JSON_KEY = {"X-ApiKey": "key", "Content-Type": "application/json"}
DOC_EXAMPLES = [
    {
        "clientMessageId": "12345",
        "recipient": "46701234567",
        "content": {
            "$type": "SMSProject",
            "projectId": 123,
            "placeholders": ["John", "Order #5678"],
        },
    },
    {
        "clientMessageId": "67890",
        "recipient": "46709876543",
        "content": {
            "$type": "WhatsappProject",
            "projectId": 789,
            "placeholders": ["Jane", "Delivery on Monday"],
        },
    },
    {
        "clientMessageId": "54321",
        "recipient": "46705678901",
        "content": {
            "$type": "SMSFromAlpha",
            "sender": "Wiraya",
            "text": "Your verification code is 123456",
        },
    },
]


def message(
    client_message_id: str, recipient: str = "46701234567", **content: Any
) -> dict[str, Any]:
    body = content or {"$type": "SMSProject", "projectId": 1, "placeholders": ["x"]}
    return {"clientMessageId": client_message_id, "recipient": recipient, "content": body}


@pytest.fixture(scope="module")
def shared() -> Iterator[RunningSandbox]:
    with running_sandbox(seed=1) as sandbox:
        yield sandbox


@pytest.fixture
def sandbox(shared: RunningSandbox) -> RunningSandbox:
    shared.set_faults(Faults())
    shared.reset()
    return shared


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def post(
    http: httpx.Client,
    sandbox: RunningSandbox,
    communications: list[dict[str, Any]] | None = None,
    *,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    body = (
        content if content is not None else json.dumps({"communications": communications}).encode()
    )
    sent = {"X-ApiKey": "key", "Content-Type": "application/json"} if headers is None else headers
    return http.post(sandbox.url + PATH, content=body, headers=sent)


# The API document -------------------------------------------------------------------------------


@pytest.mark.parametrize("example", DOC_EXAMPLES, ids=lambda e: e["content"]["$type"])
def test_the_doc_examples_are_answered_as_the_doc_shows(
    http: httpx.Client, sandbox: RunningSandbox, example: dict[str, Any]
) -> None:
    response = post(http, sandbox, [example])

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    results = response.json()["results"]
    assert list(results) == [example["clientMessageId"]]
    result = results[example["clientMessageId"]]
    assert HEX32.fullmatch(result["trackingId"])
    assert (result["success"], result["isTransientError"]) == (True, False)
    assert sandbox.ledger()[example["clientMessageId"]].tracking_id == result["trackingId"]


def test_text_json_is_accepted_and_xml_is_not(http: httpx.Client, sandbox: RunningSandbox) -> None:
    text_json = {"X-ApiKey": "k", "Content-Type": "text/json; charset=utf-8"}
    xml = {"X-ApiKey": "k", "Content-Type": "application/xml"}

    assert post(http, sandbox, [message("a")], headers=text_json).status_code == 200
    assert post(http, sandbox, [message("b")], headers=xml).status_code == 415


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json"},
        {"X-ApiKey": "", "Content-Type": "application/json"},
        {"x-apikey": "key", "Content-Type": "application/json"},  # the name is case-sensitive
        {"Authorization": "Bearer key", "Content-Type": "application/json"},
    ],
)
def test_requests_without_the_exact_key_header_are_401(
    http: httpx.Client, sandbox: RunningSandbox, headers: dict[str, str]
) -> None:
    response = post(http, sandbox, [message("a")], headers=headers)

    assert (response.status_code, response.text) == (401, "Invalid API Key")
    assert sandbox.ledger() == {}


def test_a_configured_key_is_the_only_one_accepted(http: httpx.Client) -> None:
    with running_sandbox(api_key="s3cret") as sandbox:
        wrong = post(
            http,
            sandbox,
            [message("a")],
            headers={"X-ApiKey": "guess", "Content-Type": "application/json"},
        )
        right = post(
            http,
            sandbox,
            [message("a")],
            headers={"X-ApiKey": "s3cret", "Content-Type": "application/json"},
        )

    assert (wrong.status_code, right.status_code) == (401, 200)


# Validation -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("communications", "reason"),
    [
        ([message("a", "+46701234567")], "communications[0] (clientMessageId 'a'): recipient"),
        (
            [message("a"), message("b", projectId=1, placeholders=[], **{"$type": "SMSProject"})],
            "first property",
        ),
        (
            [message("a", **{"$type": "SMSFromAlpha", "sender": "TwelveChars!", "text": "t"})],
            "11 characters",
        ),
        ([{"recipient": "46701234567"}], "communications[0].clientMessageId"),
    ],
)
def test_an_invalid_message_fails_the_whole_request_with_a_reason(
    http: httpx.Client, sandbox: RunningSandbox, communications: list[dict[str, Any]], reason: str
) -> None:
    response = post(http, sandbox, communications)

    assert response.status_code == 400
    assert response.json()["message"].startswith("Invalid input format: ")
    assert reason in response.json()["message"]
    assert sandbox.ledger() == {}  # nothing in a refused request is processed


@pytest.mark.parametrize("body", [b"", b"not json", b'{"communications": "x"}', b"[]"])
def test_malformed_bodies_are_400(http: httpx.Client, sandbox: RunningSandbox, body: bytes) -> None:
    response = post(http, sandbox, content=body)

    assert response.status_code == 400
    assert "Invalid input format" in response.json()["message"]


def test_per_message_validation_fails_only_the_bad_message(
    http: httpx.Client, sandbox: RunningSandbox
) -> None:
    sandbox.set_faults(validation=Validation.MESSAGE)

    response = post(http, sandbox, [message("good"), message("bad", "0701234567")])

    assert response.status_code == 200
    results = response.json()["results"]
    assert results["good"]["success"] is True
    assert results["bad"]["success"] is False
    assert results["bad"]["isTransientError"] is False
    assert "recipient" in results["bad"]["errorMessage"]
    assert list(sandbox.ledger()) == ["good"]


# De-duplication, test recipients and the ledger -------------------------------------------------


def test_a_resend_returns_the_original_tracking_id_and_is_counted(
    http: httpx.Client, sandbox: RunningSandbox
) -> None:
    first = post(http, sandbox, [message("m1")]).json()["results"]["m1"]
    again = post(http, sandbox, [message("m1"), message("m2")]).json()["results"]

    assert again["m1"] == first
    assert again["m2"]["trackingId"] != first["trackingId"]
    entry = sandbox.ledger()["m1"]
    assert (entry.tracking_id, entry.times_received) == (first["trackingId"], 2)
    assert entry.first_received < entry.last_received
    assert (sandbox.stats()["accepted"], sandbox.stats()["duplicates"]) == (2, 1)


def test_test_recipients_answer_as_documented(http: httpx.Client, sandbox: RunningSandbox) -> None:
    batch = [
        message("perm", "46700000001"),
        message("twice", "46700000002"),
        message("forever", "46700000003"),
        message("omitted", "46700000004"),
    ]

    answers = [post(http, sandbox, batch).json()["results"] for _ in range(3)]

    assert [a["perm"]["isTransientError"] for a in answers] == [False, False, False]
    assert [a["twice"]["success"] for a in answers] == [False, False, True]
    assert [a["twice"]["isTransientError"] for a in answers[:2]] == [True, True]
    assert [a["forever"]["isTransientError"] for a in answers] == [True, True, True]
    assert "omitted" not in answers[0]
    assert answers[1]["omitted"]["trackingId"] == answers[2]["omitted"]["trackingId"]
    ledger = sandbox.ledger()
    assert ledger["omitted"].tracking_id == answers[1]["omitted"]["trackingId"]
    assert ledger["twice"].tracking_id == answers[2]["twice"]["trackingId"]
    assert ledger["perm"].tracking_id is None and ledger["forever"].tracking_id is None
    assert {key: entry.times_received for key, entry in ledger.items()} == dict.fromkeys(ledger, 3)


def test_admin_endpoints_show_and_reset_the_ledger(
    http: httpx.Client, sandbox: RunningSandbox
) -> None:
    admin = SandboxAdmin(sandbox.url)
    tracking_id = post(http, sandbox, [message("m1")]).json()["results"]["m1"]["trackingId"]

    ledger = admin.ledger()
    one = http.get(sandbox.url + "/_sandbox/ledger", params={"client_message_id": "m1"})
    missing = http.get(sandbox.url + "/_sandbox/ledger", params={"client_message_id": "nope"})
    stats = admin.stats()
    admin.reset()

    assert (ledger["m1"].tracking_id, ledger["m1"].times_received) == (tracking_id, 1)
    assert (one.status_code, one.json()["tracking_id"], missing.status_code) == (
        200,
        tracking_id,
        404,
    )
    assert (stats["requests"], stats["messages"], stats["by_status"]) == (1, 1, {"200": 1})
    assert admin.ledger() == {}
    assert admin.stats()["requests"] == 0


# Faults -----------------------------------------------------------------------------------------


def test_faults_switch_on_and_off_at_run_time_over_http(
    http: httpx.Client, sandbox: RunningSandbox
) -> None:
    admin = SandboxAdmin(sandbox.url)

    admin.set_faults(outage=True)
    during = [post(http, sandbox, [message(f"o{i}")]).status_code for i in range(3)]
    admin.set_faults(outage=False)
    after = post(http, sandbox, [message("o9")]).status_code

    assert during == [503, 503, 503]
    assert after == 200
    assert admin.stats()["during_outage"] == 3
    assert list(admin.ledger()) == ["o9"]


def test_fault_settings_are_validated_and_can_be_replaced_whole(sandbox: RunningSandbox) -> None:
    admin = SandboxAdmin(sandbox.url)

    changed = admin.set_faults(latency_ms=5, p503=0.25, max_batch=10)
    replaced = admin.set_faults(replace_all=True, p500=0.1)

    assert (changed["latency_ms"], changed["p503"], changed["max_batch"]) == (5.0, 0.25, 10)
    assert (replaced["latency_ms"], replaced["p503"], replaced["p500"]) == (0.0, 0.0, 0.1)
    assert sandbox.faults == Faults(p500=0.1)
    with pytest.raises(ValueError, match=r"400.*probability"):
        admin.set_faults(p500=2)
    with pytest.raises(ValueError, match="404"):
        admin._call("GET", "nothing")


def test_server_errors_come_as_json_500_text_503_and_html_502(
    http: httpx.Client, sandbox: RunningSandbox
) -> None:
    answers = {}
    for fault in ("p500", "p503", "p502_html"):
        sandbox.set_faults(Faults(**{fault: 1.0}))
        answers[fault] = post(http, sandbox, [message(fault)])

    assert answers["p500"].status_code == 500
    assert answers["p500"].json() == {"message": "An error has occurred."}
    assert (answers["p503"].status_code, answers["p503"].headers["content-type"]) == (
        503,
        "text/plain; charset=utf-8",
    )
    assert answers["p502_html"].status_code == 502
    assert answers["p502_html"].headers["content-type"] == "text/html"
    assert "<title>502 Bad Gateway</title>" in answers["p502_html"].text
    assert sandbox.ledger() == {}


def test_one_seed_gives_one_sequence_of_faults(http: httpx.Client) -> None:
    def statuses() -> list[int]:
        with running_sandbox(Faults(p500=0.3, p503=0.3), seed=42) as sandbox:
            return [post(http, sandbox, [message(str(i))]).status_code for i in range(30)]

    first, second = statuses(), statuses()

    assert first == second
    assert {200, 500, 503} == set(first)


def test_too_many_messages_is_bulk_item_limit_exceeded(
    http: httpx.Client, sandbox: RunningSandbox
) -> None:
    sandbox.set_faults(max_batch=2)

    too_many = post(http, sandbox, [message(str(i)) for i in range(3)])
    enough = post(http, sandbox, [message(str(i)) for i in range(2)])

    assert (too_many.status_code, too_many.json()) == (400, {"bulkItemLimitExceeded": True})
    assert enough.status_code == 200


def test_too_large_bodies_are_413_from_the_proxy(
    http: httpx.Client, sandbox: RunningSandbox
) -> None:
    sandbox.set_faults(max_body_bytes=500)

    response = post(http, sandbox, [message(str(i)) for i in range(10)])

    assert response.status_code == 413
    assert "413 Request Entity Too Large" in response.text


def test_above_the_rate_limit_requests_get_429_with_retry_after(
    http: httpx.Client, sandbox: RunningSandbox
) -> None:
    sandbox.set_faults(rate_limit=0.2, retry_after=timedelta(seconds=17))  # one per 5 s

    statuses = [post(http, sandbox, [message(str(i))]) for i in range(4)]

    assert [r.status_code for r in statuses] == [200, 429, 429, 429]
    assert statuses[2].headers["Retry-After"] == "17"
    assert sandbox.stats()["rate_limited"] == 3
    assert sandbox.request_count == 4


def test_latency_delays_the_answer(http: httpx.Client, sandbox: RunningSandbox) -> None:
    sandbox.set_faults(latency=timedelta(milliseconds=300))

    started = time.monotonic()
    response = post(http, sandbox, [message("slow")])

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_a_dropped_connection_comes_after_the_work(
    http: httpx.Client, sandbox: RunningSandbox
) -> None:
    sandbox.set_faults(p_drop=1.0)

    with pytest.raises(httpx.RemoteProtocolError):
        post(http, sandbox, [message("dropped")])

    assert sandbox.entry("dropped") is not None
    assert sandbox.ledger()["dropped"].tracking_id is not None
    assert sandbox.stats()["dropped"] == 1


def test_a_slow_answer_comes_after_the_work(http: httpx.Client, sandbox: RunningSandbox) -> None:
    sandbox.set_faults(slow_after_work=timedelta(seconds=5))

    with pytest.raises(httpx.TimeoutException):
        http.post(
            sandbox.url + PATH,
            json={"communications": [message("late")]},
            headers={"X-ApiKey": "k"},
            timeout=0.3,
        )

    # The answer waits; the work was done.
    entry = wait_for(lambda: sandbox.entry("late"), timeout=10, what="the late message")
    assert entry.tracking_id is not None


def test_a_bad_json_answer_comes_after_the_work(
    http: httpx.Client, sandbox: RunningSandbox
) -> None:
    sandbox.set_faults(p_bad_json=1.0)

    response = post(http, sandbox, [message("cut")])

    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)
    assert sandbox.ledger()["cut"].tracking_id is not None


def test_forbidden_answers_403(http: httpx.Client, sandbox: RunningSandbox) -> None:
    sandbox.set_faults(forbidden=True)

    assert post(http, sandbox, [message("a")]).status_code == 403


def test_unknown_paths_are_404(http: httpx.Client, sandbox: RunningSandbox) -> None:
    assert http.post(sandbox.url + "/api/Other", content=b"{}").status_code == 404
    assert http.get(sandbox.url + PATH).status_code == 404


# The command line -------------------------------------------------------------------------------


def test_the_command_runs_with_faults_from_flags_and_stops_on_sigterm(http: httpx.Client) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--port", "0", "--outage", "--max-batch", "5"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split()[3]
        admin = SandboxAdmin(url)
        admin.wait_ready()
        headers = {"X-ApiKey": "k", "Content-Type": "application/json"}
        body = {"communications": DOC_EXAMPLES}
        during = http.post(url + PATH, json=body, headers=headers)
        admin.set_faults(outage=False)
        after = http.post(url + PATH, json=body, headers=headers)
        faults = admin.faults()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()

    assert during.status_code == 503
    assert after.status_code == 200
    assert sorted(after.json()["results"]) == ["12345", "54321", "67890"]
    assert faults["max_batch"] == 5
    assert code == 0


def test_the_command_refuses_bad_flags() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "sandbox", "--p500", "2"], capture_output=True, text=True, timeout=30
    )

    assert completed.returncode == 2
    assert "p500" in completed.stderr


# Faults the gate's tests need --------------------------------------------------------------------


def test_a_poison_recipient_fails_every_request_holding_it_and_only_those(
    http: httpx.Client, sandbox: RunningSandbox
) -> None:
    poisoned = [message("p1"), message("bad", "46700000006"), message("p2")]

    first = post(http, sandbox, poisoned)
    again = post(http, sandbox, poisoned)
    without = post(http, sandbox, [message("p1"), message("p2")])
    alone = post(http, sandbox, [message("bad", "46700000006")])

    assert [r.status_code for r in (first, again, without, alone)] == [500, 500, 200, 500]
    assert first.json() == {"message": "An error has occurred."}
    assert set(sandbox.ledger()) == {"p1", "p2"}  # a poisoned request records nothing
    assert sandbox.ledger()["p1"].times_received == 1
    assert sandbox.stats()["poisoned"] == 3


def test_a_trickling_answer_comes_whole_in_many_pieces_after_the_work(
    sandbox: RunningSandbox,
) -> None:
    sandbox.set_faults(trickle=timedelta(milliseconds=400))
    body = json.dumps({"communications": [message("t1"), message("t2")]}).encode()

    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", sandbox.url + PATH, content=body, headers=JSON_KEY) as response,
    ):
        assert sandbox.ledger()["t1"].tracking_id is not None  # the work was done first
        started = time.monotonic()
        pieces = list(response.iter_raw())
        took = time.monotonic() - started

    results = json.loads(b"".join(pieces))["results"]
    assert response.status_code == 200
    assert sorted(results) == ["t1", "t2"]
    assert results["t1"]["trackingId"] == sandbox.ledger()["t1"].tracking_id
    assert len(pieces) > 10
    assert took >= 0.3
    assert sandbox.stats()["trickled"] == 1


def test_a_client_giving_up_on_a_trickle_is_counted_and_the_work_stays_done(
    sandbox: RunningSandbox,
) -> None:
    sandbox.set_faults(trickle=timedelta(seconds=30))
    body = json.dumps({"communications": [message("gave-up")]}).encode()

    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", sandbox.url + PATH, content=body, headers=JSON_KEY) as response,
    ):
        assert response.status_code == 200
        next(response.iter_raw())  # the first bytes, then hang up

    wait_for(lambda: sandbox.stats()["hung_up"], timeout=10, what="the sandbox to see the hang-up")
    assert sandbox.ledger()["gave-up"].tracking_id is not None


def test_only_some_answers_trickle_with_a_probability(
    http: httpx.Client, sandbox: RunningSandbox
) -> None:
    sandbox.set_faults(trickle=timedelta(milliseconds=50), p_trickle=0.5)

    for i in range(20):
        assert post(http, sandbox, [message(f"m{i}")]).status_code == 200

    assert 0 < sandbox.stats()["trickled"] < 20


def test_a_proxys_html_400_refuses_before_the_work(
    http: httpx.Client, sandbox: RunningSandbox
) -> None:
    sandbox.set_faults(p400_html=1.0)

    response = post(http, sandbox, [message("h")])

    assert response.status_code == 400
    assert response.headers["content-type"] == "text/html"
    assert "<title>400 Request Header Or Cookie Too Large</title>" in response.text
    assert sandbox.ledger() == {}


def test_too_many_messages_and_too_many_bytes_answer_differently(
    http: httpx.Client, sandbox: RunningSandbox
) -> None:
    sandbox.set_faults(max_batch=3, max_body_bytes=600)

    many_small = post(http, sandbox, [message(str(i)) for i in range(4)])
    big = message("big", **{"$type": "SMSProject", "projectId": 1, "placeholders": ["x" * 700]})
    few_big = post(http, sandbox, [big])

    assert (many_small.status_code, many_small.json()) == (400, {"bulkItemLimitExceeded": True})
    assert few_big.status_code == 413
    assert few_big.headers["content-type"] == "text/html"


def test_camel_case_keys_spell_results_as_newtonsoft_does(
    http: httpx.Client, sandbox: RunningSandbox
) -> None:
    sandbox.set_faults(camel_case_keys=True)

    response = post(http, sandbox, [message("Order-42"), message("ORDER-7"), message("abc")])

    assert sorted(response.json()["results"]) == ["abc", "ordeR-7", "order-42"]
    assert set(sandbox.ledger()) == {"Order-42", "ORDER-7", "abc"}  # the ledger keeps the ids


def test_camel_cased_keys_that_collide_are_written_twice(
    http: httpx.Client, sandbox: RunningSandbox
) -> None:
    sandbox.set_faults(camel_case_keys=True)

    response = post(http, sandbox, [message("Order-1"), message("order-1")])

    pairs = json.loads(response.content, object_pairs_hook=list)
    assert [key for key, _ in pairs[0][1]] == ["order-1", "order-1"]


def test_the_new_faults_come_from_flags_too() -> None:
    args = build_parser().parse_args(
        ["--trickle-ms", "250", "--p-trickle", "0.5", "--p400-html", "0.1", "--camel-case-keys"]
    )

    faults = faults_from(args)

    assert faults == Faults(
        trickle=timedelta(milliseconds=250), p_trickle=0.5, p400_html=0.1, camel_case_keys=True
    )


def test_a_resend_while_a_slow_answer_is_on_its_way_is_counted(
    http: httpx.Client, sandbox: RunningSandbox
) -> None:
    sandbox.set_faults(trickle=timedelta(milliseconds=800))
    first: list[httpx.Response] = []
    in_flight = threading.Thread(target=lambda: first.append(post(http, sandbox, [message("r")])))
    in_flight.start()
    wait_for(lambda: sandbox.entry("r"), timeout=10, what="the work done")  # the answer trickles

    sandbox.set_faults(Faults())
    with httpx.Client(timeout=10) as other:
        resent = post(other, sandbox, [message("r"), message("fresh")])
    in_flight.join()
    after = post(http, sandbox, [message("r")])

    assert [r.status_code for r in (first[0], resent, after)] == [200, 200, 200]
    assert sandbox.stats()["received_while_answering"] == 1
    assert sandbox.ledger()["r"].times_received == 3


def test_a_resend_after_the_client_closed_on_a_trickling_answer_is_not_counted(
    http: httpx.Client, sandbox: RunningSandbox
) -> None:
    """The resend comes at once after the close, before the trickling thread may notice it."""
    sandbox.set_faults(trickle=timedelta(seconds=30))
    body = json.dumps({"communications": [message("closed")]}).encode()
    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", sandbox.url + PATH, content=body, headers=JSON_KEY) as response,
    ):
        next(response.iter_raw())  # the answer has begun; the client hangs up on it
    sandbox.set_faults(Faults())

    resent = post(http, sandbox, [message("closed")])

    assert resent.status_code == 200
    assert sandbox.stats()["received_while_answering"] == 0
    assert sandbox.ledger()["closed"].times_received == 2
