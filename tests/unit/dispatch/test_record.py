"""What the record writes of an answer: printable, bounded text, and tracking ids as documented."""

from __future__ import annotations

from worker.dispatch.record import is_tracking_id, printable


def test_every_text_the_record_writes_is_printable_and_bounded() -> None:
    # NUL, which PostgreSQL refuses in text, cannot reach a column, whatever a result said.
    assert printable("a\x00b\x1bc\u2028d\ud800e\x7ff") == "a b c d e f"
    assert printable("  many   spaces\n\nand lines ") == "many spaces and lines"
    assert len(printable("y" * 10_000)) == 500 and printable("y" * 10_000).endswith("…")


def test_a_tracking_id_is_32_hex_characters() -> None:
    assert is_tracking_id("0123456789abcdef0123456789ABCDEF")
    for bad in ("", "0" * 31, "0" * 33, "g" * 32, "0" * 31 + "\x00", None, 42):
        assert not is_tracking_id(bad)
