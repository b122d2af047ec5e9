"""An SMSFromAlpha text's parts at enqueue: counted, bounded by ``max_segments``, transliterated."""

from __future__ import annotations

import logging

from models.content import Content, SMSFromAlpha
from models.errors import InvalidMessage
from models.segments import segments_of, transliterate

log = logging.getLogger("models.producer")


def segment_count(content: Content) -> int | None:
    """The SMS parts of a text the outbox knows; None for a Wiraya template."""
    if isinstance(content, SMSFromAlpha):
        return segments_of(content.text).count
    return None


def check_segments(content: Content, max_segments: object) -> None:
    """Refuse a text longer than ``max_segments`` parts, with its count and encoding."""
    if max_segments is None:
        return
    if isinstance(max_segments, bool) or not isinstance(max_segments, int) or max_segments < 1:
        raise InvalidMessage("max_segments", f"must be a whole number from 1, got {max_segments!r}")
    if not isinstance(content, SMSFromAlpha):
        return
    parts = segments_of(content.text)
    if parts.count > max_segments:
        raise InvalidMessage(
            "content.text",
            f"takes {parts.count} SMS segments ({parts.encoding.value}), "
            f"more than max_segments={max_segments}",
        )


def transliterated(content: Content) -> Content:
    """The content with its text's UCS-2-forcing characters replaced; says which, in the log."""
    if not isinstance(content, SMSFromAlpha):
        return content
    text, replaced = transliterate(content.text)
    if not replaced:
        return content
    log.info(
        "transliterated %s to GSM-7 in a text to send",
        ", ".join(f"U+{ord(char):04X}" for char in replaced),
    )
    return content.model_copy(update={"text": text})
