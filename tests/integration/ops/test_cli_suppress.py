"""`outbox suppress add|remove|list` on both databases: one entry per number however written."""

from __future__ import annotations

import pytest

from tests.integration.ops.test_cli import run


def test_add_list_and_remove_one_recipient_written_two_ways(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        database_url, "suppress", "add", "+46 70-123 45 67", "--reason", "STOP", capsys=capsys
    )
    assert (code, out.strip()) == (
        0,
        "suppressed 46701234567: normal and bulk messages (codes still go)",
    )
    code, out, _ = run(database_url, "suppress", "add", "46701234567", "--all-lanes", capsys=capsys)
    assert out.strip() == "suppressed 46701234567: every lane"

    code, out, _ = run(database_url, "suppress", "list", capsys=capsys)
    lines = out.strip().splitlines()
    assert len(lines) == 2  # the header and one entry
    assert lines[1].split()[:3] == ["46701234567", "all", "operator"]

    code, out, _ = run(database_url, "suppress", "remove", "0046701234567", capsys=capsys)
    assert code == 0
    code, _, err = run(database_url, "suppress", "remove", "46701234567", capsys=capsys)
    assert (code, err.strip()) == (1, "outbox: 46701234567 is not on the opt-out list")
    code, out, _ = run(database_url, "suppress", "list", capsys=capsys)
    assert out.strip() == "the opt-out list is empty"


def test_a_recipient_that_is_no_phone_number_is_refused_naming_it(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(database_url, "suppress", "add", "hello", capsys=capsys)
    assert code == 2
    assert err.startswith("outbox: recipient:")
