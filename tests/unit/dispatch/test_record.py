"""What the record writes of an answer: tracking ids as documented (its text: models.text)."""

from __future__ import annotations

from worker.dispatch.record import is_tracking_id


def test_a_tracking_id_is_32_hex_characters() -> None:
    assert is_tracking_id("0123456789abcdef0123456789ABCDEF")
    for bad in ("", "0" * 31, "0" * 33, "g" * 32, "0" * 31 + "\x00", None, 42):
        assert not is_tracking_id(bad)
