"""SMS segments: GSM-7 with its extension table, else UCS-2; 160/153 and 70/67 per part."""

from __future__ import annotations

import pytest

from models import InvalidMessage, NewMessage, SMSFromAlpha
from models.segments import Encoding, segments_of, transliterate

RECIPIENT = "46701234567"


@pytest.mark.parametrize(
    ("text", "encoding", "count"),
    [
        ("a" * 160, Encoding.GSM7, 1),
        ("a" * 161, Encoding.GSM7, 2),
        ("a" * 306, Encoding.GSM7, 2),
        ("a" * 307, Encoding.GSM7, 3),
        ("€" * 80, Encoding.GSM7, 1),  # the extension table: two septets each
        ("€" * 81, Encoding.GSM7, 2),
        ("a" * 152 + "€" + "a" * 10, Encoding.GSM7, 2),  # the pair is not split across parts
        ("a" * 152 + "€" * 77, Encoding.GSM7, 3),
        ("ä" * 160, Encoding.GSM7, 1),  # in the basic table
        ("\u2019" + "a" * 69, Encoding.UCS2, 1),
        ("\u2019" + "a" * 70, Encoding.UCS2, 2),
        ("\u2019" + "a" * 133, Encoding.UCS2, 2),
        ("\u2019" + "a" * 134, Encoding.UCS2, 3),
        ("😀" * 35, Encoding.UCS2, 1),  # a surrogate pair: two UTF-16 units
        ("a" + "😀" * 35, Encoding.UCS2, 2),
    ],
)
def test_the_encoding_and_the_parts_a_text_takes(text: str, encoding: Encoding, count: int) -> None:
    parts = segments_of(text)
    assert (parts.encoding, parts.count) == (encoding, count)


def test_one_curly_quote_makes_a_one_part_text_three_ucs2_parts() -> None:
    text = "Don\u2019t miss our sale " + "x" * 130
    assert segments_of(text.replace("\u2019", "'")).count == 1
    assert (segments_of(text).encoding, segments_of(text).count) == (Encoding.UCS2, 3)


def test_transliteration_replaces_the_usual_ucs2_characters_and_says_which() -> None:
    text, replaced = transliterate("\u201cHi\u201d \u2013 it\u2019s\u00a0here\u2026")
    assert text == '"Hi" - it\'s here...'
    assert replaced == sorted(["\u201c", "\u201d", "\u2013", "\u2019", "\u00a0", "\u2026"])
    assert segments_of(text).encoding is Encoding.GSM7


def alpha(text: str) -> dict[str, str]:
    return {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": text}


def test_enqueue_stores_the_segment_count_of_a_known_text() -> None:
    message = NewMessage.create(recipient=RECIPIENT, content=alpha("a" * 200))
    assert message.row()["segments"] == 2


def test_max_segments_refuses_a_longer_text_with_its_count() -> None:
    with pytest.raises(InvalidMessage) as caught:
        NewMessage.create(recipient=RECIPIENT, content=alpha("\u2019" * 71), max_segments=1)
    assert caught.value.field == "content.text"
    assert "takes 2 SMS segments (ucs2), more than max_segments=1" in caught.value.reason


def test_max_segments_must_be_a_whole_number_from_one() -> None:
    with pytest.raises(InvalidMessage) as caught:
        NewMessage.create(recipient=RECIPIENT, content=alpha("hi"), max_segments=0)
    assert caught.value.field == "max_segments"


def test_transliterate_makes_the_text_fit_and_logs_what_it_replaced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    text = "Don\u2019t miss it " + "x" * 140
    with caplog.at_level("INFO", logger="models.producer"):
        message = NewMessage.create(
            recipient=RECIPIENT, content=alpha(text), max_segments=1, transliterate=True
        )
    assert isinstance(message.content, SMSFromAlpha)
    assert message.content.text == "Don't miss it " + "x" * 140
    assert message.row()["segments"] == 1
    assert "U+2019" in caplog.text


def test_a_template_has_no_segment_count() -> None:
    content = {"$type": "SMSProject", "projectId": 1, "placeholders": []}
    message = NewMessage.create(recipient=RECIPIENT, content=content, max_segments=1)
    assert message.row()["segments"] is None
