"""The API key taken out of every text a request's failure becomes, at the client's boundary.

An error of the HTTP stack can quote the request's headers (h11 refused ``X-ApiKey: KEY `` with
``Illegal header value b'KEY '``), and a gateway's answer can echo them. Whatever the client
returns (a result's reason, each message's reason) or logs passes through here once, in
WirayaClient.send, so no row (``last_error``, the gate's ``reason``), log line, task result or CLI
output downstream can hold the key. The key is looked for as it is and in the forms an error
text spells it in (trimmed, escaped as Python or JSON shows bytes and strings, whitespace
collapsed as a cleaned reason has it), and a reason cut short just inside the key loses the cut
piece too.
"""

from __future__ import annotations

import dataclasses
import json
from urllib.parse import quote

from models.text import MAX_TEXT_LENGTH
from worker.wiraya.results import Accepted, Answered, SendResult

REDACTED = "[API key]"
SHORTEST_PIECE = 4  # a cut-off end this short of a key is left: it could be any text


class Redactor:
    """Removes one secret from texts, in every spelling an error message gives it."""

    def __init__(self, secret: str | None) -> None:
        if not secret:
            self._spellings: list[str] = []
            return
        spellings = {
            secret,
            secret.strip(),
            " ".join(secret.split()),
            repr(secret.encode("utf-8", "backslashreplace"))[2:-1],
            repr(secret)[1:-1],
            json.dumps(secret)[1:-1],
            quote(secret, safe=""),
        }
        self._spellings = sorted((s for s in spellings if s), key=len, reverse=True)

    def text(self, value: str) -> str:
        """``value`` with every spelling of the secret replaced by ``[API key]``."""
        for spelling in self._spellings:
            value = value.replace(spelling, REDACTED)
        return self._without_cut_piece(value)

    def _without_cut_piece(self, value: str) -> str:
        # A reason is cut at MAX_TEXT_LENGTH with "…": the key may have been cut with it.
        if not value.endswith("…"):
            return value
        body = value[:-1]
        for spelling in self._spellings:
            for size in range(min(len(spelling), len(body)), SHORTEST_PIECE - 1, -1):
                if body.endswith(spelling[:size]):
                    return (body[:-size] + REDACTED)[:MAX_TEXT_LENGTH] + "…"
        return value

    def result(self, result: SendResult) -> SendResult:
        """``result`` with its reasons (the request's, or each message's) redacted."""
        if isinstance(result, Answered):
            outcomes = {
                message: outcome
                if isinstance(outcome, Accepted)
                else dataclasses.replace(outcome, reason=self.text(outcome.reason))
                for message, outcome in result.outcomes.items()
            }
            return dataclasses.replace(result, outcomes=outcomes)
        return dataclasses.replace(result, reason=self.text(result.reason))
