"""Test recipients: phone numbers whose last seven digits fix the sandbox's answer, like test cards.

| recipient ends in | the sandbox answers                                                        |
|-------------------|----------------------------------------------------------------------------|
| 0000001           | permanent failure (success false, isTransientError false), every time      |
| 0000002           | transient failure (isTransientError true) on the first two receipts of a   |
|                   | clientMessageId, accepted on the third                                     |
| 0000003           | transient failure on every receipt, forever                                |
| 0000004           | left out of results on the first receipt (outcome unknown, yet accepted    |
|                   | and ledgered); a resend is answered with the same tracking id              |
| 0000005           | refused by validation, as a number Wiraya does not accept although it looks |
|                   | like an MSISDN: 400 for the whole request, or a permanent per-message      |
|                   | failure in per-message validation mode                                     |
| 0000006           | poison: every request holding it is answered HTTP 500 (JSON) as a whole,   |
|                   | and nothing in that request is recorded; requests without it go through    |
| 0000007           | accepted; its delivery report (sandbox.reports) says NOT_DELIVERED       |
| 0000008           | hanging poison: a request holding it gets no answer (the server holds the  |
|                   | connection until the client gives up), and nothing in it is recorded       |
| anything else     | accepted (and reported DELIVERED)                                          |

For example 46700000001 always fails permanently and 46700000002 succeeds on the third try.
Receipts are counted per clientMessageId, so a resend under a new id starts again from one.
"""

from __future__ import annotations

from enum import Enum


class Behaviour(Enum):
    """What the sandbox does with one valid communication, before de-duplication."""

    ACCEPT = "accepted"
    PERMANENT = "rejected"
    TRANSIENT = "transient"
    OMIT = "omitted"  # accepted, yet left out of the results


PERMANENT_SUFFIX = "0000001"
TRANSIENT_TWICE_SUFFIX = "0000002"
TRANSIENT_FOREVER_SUFFIX = "0000003"
OMITTED_ONCE_SUFFIX = "0000004"
INVALID_SUFFIX = "0000005"
POISON_SUFFIX = "0000006"
NOT_DELIVERED_SUFFIX = "0000007"
HANG_SUFFIX = "0000008"
TRANSIENT_TWICE_ATTEMPTS = 2


TEST_MARK = "000000"  # every test suffix starts with it; other recipients are simply accepted


def may_be_test_recipient(recipient: str) -> bool:
    """A cheap first check, for the sandbox's hot path: False means plainly accepted."""
    return recipient[-7:-1] == TEST_MARK


def draws_server_error(recipient: str) -> bool:
    """Whether a request holding this recipient is answered 500 as a whole (a poison message)."""
    return recipient.endswith(POISON_SUFFIX)


def draws_no_answer(recipient: str) -> bool:
    """Whether a request holding this recipient is never answered (a poison message that hangs)."""
    return recipient.endswith(HANG_SUFFIX)


def behaviour(recipient: str, receipt: int) -> Behaviour:
    """The answer for the `receipt`-th receipt (1-based) of a message to `recipient`."""
    if not may_be_test_recipient(recipient):
        return Behaviour.ACCEPT
    suffix = recipient[-7:]
    if suffix == PERMANENT_SUFFIX:
        return Behaviour.PERMANENT
    if suffix == TRANSIENT_FOREVER_SUFFIX:
        return Behaviour.TRANSIENT
    if suffix == TRANSIENT_TWICE_SUFFIX and receipt <= TRANSIENT_TWICE_ATTEMPTS:
        return Behaviour.TRANSIENT
    if suffix == OMITTED_ONCE_SUFFIX and receipt == 1:
        return Behaviour.OMIT
    return Behaviour.ACCEPT


def delivery_status(recipient: str) -> str:
    """The status of the delivery report pushed for an accepted message to ``recipient``."""
    return "NOT_DELIVERED" if recipient.endswith(NOT_DELIVERED_SUFFIX) else "DELIVERED"


REASONS = {
    Behaviour.PERMANENT: "recipient is blocked (sandbox test recipient ...0000001)",
    Behaviour.TRANSIENT: "operator temporarily unavailable (sandbox test recipient)",
}
