"""Screening: microseconds per stored row that ``screen_stored`` takes, the dispatcher's check.

Rows as a claim reads them (jsonb's key order; also from the column's text, decoded with
``decode_stored_content``), one kind at a time, best of five runs in CPU time; beside them
``normalize_recipient`` and ``parse_content(...).to_api()`` alone (what the dispatcher called
before the whole row was screened), and rows that are refused. No database: CPU alone.

Run: .venv/bin/python bench/bench_screen.py [--rows 20000]
"""

from __future__ import annotations

import argparse
import json
import time
import timeit
from collections.abc import Callable
from contextlib import suppress

import support

from models import (
    InvalidMessage,
    decode_stored_content,
    normalize_recipient,
    parse_content,
    screen_stored,
)

# As PostgreSQL's jsonb hands them back: keys sorted by length, then bytes.
ROWS: dict[str, dict[str, object]] = {
    "SMSProject, 2 placeholders": {
        "$type": "SMSProject",
        "projectId": 123,
        "placeholders": ["John", "Order #5678"],
    },
    "SMSFromAlpha, 40-character text": {
        "text": "Your verification code is 123456. Thanks",
        "$type": "SMSFromAlpha",
        "sender": "Wiraya",
    },
    "VoiceProject, nextAttemptUtc": {
        "$type": "VoiceProject",
        "projectId": 9,
        "placeholders": ["Jane", "Monday 10:00"],
        "nextAttemptUtc": "2031-01-01T08:00:00Z",
    },
    "WhatsappProject, 10 placeholders of 30": {
        "$type": "WhatsappProject",
        "projectId": 789,
        "placeholders": ["x" * 30] * 10,
    },
}


def nested(depth: int) -> object:
    value: object = "x"
    for _ in range(depth):
        value = [value]
    return value


def per_row(label: str, rows: int, check: Callable[[], object]) -> None:
    # CPU time of this process: on a shared machine, wall time counts the others' work too.
    best = min(timeit.repeat(check, number=rows, repeat=5, timer=time.process_time)) / rows
    print(f"{label:<62} {best * 1e6:6.2f} µs/row  ({1 / best:,.0f} rows/s)", flush=True)


def refused(check: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        with suppress(InvalidMessage):
            check()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    support.heading("screening stored rows (screen_stored), CPU per row")
    for kind, content in ROWS.items():
        text = json.dumps(content)
        per_row(
            f"{kind}: screen_stored",
            args.rows,
            lambda c=content: screen_stored("order-42-confirmation", "46701234567", c),
        )
        per_row(
            f"{kind}: decoded from text, then screened",
            args.rows,
            lambda t=text: screen_stored(
                "order-42-confirmation", "46701234567", decode_stored_content(t)
            ),
        )
        per_row(
            f"{kind}: recipient and content alone",
            args.rows,
            lambda c=content: (normalize_recipient("46701234567"), parse_content(c).to_api()),
        )
    bad_text = {"$type": "SMSFromAlpha", "sender": "W", "text": "a\x00b"}
    deep = {"$type": "SMSProject", "projectId": 1, "placeholders": [nested(3_000)]}
    per_row(
        "refused: a NUL in the text",
        args.rows,
        refused(lambda: screen_stored("m", "46701234567", bad_text)),
    )
    per_row(
        "refused: placeholders nested 3,000 levels deep",
        args.rows // 10,
        refused(lambda: screen_stored("m", "46701234567", deep)),
    )


if __name__ == "__main__":
    main()
