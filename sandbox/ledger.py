"""The sandbox's ledger: every valid message received, its tracking id once accepted, resends."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson


@dataclass(slots=True)
class Entry:
    """One clientMessageId as the sandbox saw it; `tracking_id` is None until it is accepted."""

    client_message_id: str
    recipient: str
    first_received: datetime
    last_received: datetime
    times_received: int = 1
    tracking_id: str | None = None
    accepted_at: datetime | None = None
    key: str = ""  # the fingerprint of the X-ApiKey it last came with (key_fingerprint)

    def to_json(self) -> dict[str, Any]:
        """The entry as the admin endpoint shows it, times in ISO 8601 UTC."""
        return {
            "client_message_id": self.client_message_id,
            "tracking_id": self.tracking_id,
            "recipient": self.recipient,
            "times_received": self.times_received,
            "first_received": _iso(self.first_received),
            "last_received": _iso(self.last_received),
            "accepted_at": _iso(self.accepted_at) if self.accepted_at else None,
            "key": self.key,
        }


@dataclass
class Ledger:
    """Thread-safe record of receipts; a batch is recorded under one lock acquisition."""

    _entries: dict[str, Entry] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # For each id of an answer being written, whether the client of that answer still waits.
    _answering: dict[str, list[Callable[[], bool]]] = field(default_factory=dict)

    def receive(
        self,
        batch: Iterable[tuple[str, str]],
        now: datetime,
        visit: Callable[[Entry], None],
        key: str = "",
    ) -> int:
        """Count one receipt of each (clientMessageId, recipient) and let `visit` answer it.

        `visit` runs under the ledger's lock, so two concurrent resends of one message cannot
        both give it a tracking id. Returns how many of them arrived while an earlier answer
        holding them was still being written to a client still waiting for it (see `answering`).
        """
        entries = self._entries
        overlapping = 0
        with self._lock:
            for client_message_id, recipient in batch:
                waiting = self._answering.get(client_message_id, ())
                overlapping += any(client_waiting() for client_waiting in waiting)
                entry = entries.get(client_message_id)
                if entry is None:
                    entry = Entry(client_message_id, recipient, now, now, 1)
                    entries[client_message_id] = entry
                else:
                    entry.times_received += 1
                    entry.last_received = now
                entry.key = key
                visit(entry)
        return overlapping

    def answering(
        self, client_message_ids: Iterable[str], client_waiting: Callable[[], bool]
    ) -> None:
        """A slow or trickling answer holding these ids is on its way (until `answered`).

        `client_waiting` says whether its client still waits for it: one that closed its
        connection has given the answer up, and a resend after that is no overlap, however
        late the server's thread notices the close.
        """
        with self._lock:
            for client_message_id in client_message_ids:
                self._answering.setdefault(client_message_id, []).append(client_waiting)

    def answered(
        self, client_message_ids: Iterable[str], client_waiting: Callable[[], bool]
    ) -> None:
        """That answer was written, or the client hung up on it."""
        with self._lock:
            for client_message_id in client_message_ids:
                waiting = self._answering.get(client_message_id, [])
                with contextlib.suppress(ValueError):
                    waiting.remove(client_waiting)
                if not waiting:
                    self._answering.pop(client_message_id, None)

    def snapshot(self) -> dict[str, Entry]:
        """A copy of every entry, keyed by clientMessageId."""
        with self._lock:
            return {key: replace(entry) for key, entry in self._entries.items()}

    def get(self, client_message_id: str) -> Entry | None:
        """A copy of one entry, or None when that clientMessageId was never received."""
        with self._lock:
            entry = self._entries.get(client_message_id)
            return replace(entry) if entry else None

    def reset(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()
            self._answering.clear()

    def save(self, path: Path) -> None:
        """Write every entry to ``path`` (JSON), replacing it whole: a restart reads it back."""
        entries = [entry.to_json() for entry in self.snapshot().values()]
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(orjson.dumps(entries))
        partial.replace(path)

    def load(self, path: Path) -> int:
        """Read the entries ``save`` wrote (none when there is no file); how many."""
        if not path.exists():
            return 0
        loaded = [_entry(item) for item in orjson.loads(path.read_bytes())]
        with self._lock:
            self._entries.update((entry.client_message_id, entry) for entry in loaded)
        return len(loaded)


def key_fingerprint(api_key: str | None) -> str:
    """A key as the ledger names it: the first 16 hex digits of its SHA-256, never the key."""
    return hashlib.sha256((api_key or "").encode()).hexdigest()[:16]


def new_tracking_ids(count: int) -> Iterator[str]:
    """`count` unique 32-character hexadecimal tracking ids, as Wiraya issues them."""
    hexes = os.urandom(16 * count).hex()  # one system call for the whole batch
    return (hexes[start : start + 32] for start in range(0, 32 * count, 32))


def _entry(item: dict[str, Any]) -> Entry:
    accepted_at = item["accepted_at"]
    return Entry(
        item["client_message_id"],
        item["recipient"],
        _moment(item["first_received"]),
        _moment(item["last_received"]),
        item["times_received"],
        item["tracking_id"],
        _moment(accepted_at) if accepted_at else None,
        item.get("key", ""),
    )


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
