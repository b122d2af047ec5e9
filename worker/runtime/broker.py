"""The demo's broker: kombu's `filesystem://` transport, made safe for a worker and beat at once.

kombu's transport keeps each message in a file that consumers rename into a "processed"
folder and read. Its producer creates the file and then writes it, so a consumer polling
at that moment may take an empty file and crash the worker on a JSON error. The channel
below writes each message under a hidden temporary name and renames it into place, which
is atomic on one filesystem: a consumer sees a message whole or not at all. Everything
else is kombu's own transport, registered under the same `filesystem` name.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu import transport as kombu_transport
from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

from worker.settings import Settings

FILESYSTEM = "filesystem"


class Channel(filesystem.Channel):
    """kombu's filesystem channel with atomic writes."""

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # The name kombu's consumer expects: "<ms>_<uuid>.<queue>.msg", oldest first.
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.part")  # never matched
        try:
            with open(partial, "wb") as file:
                file.write(str_to_bytes(dumps(message)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    """kombu's filesystem transport with the channel above."""

    Channel = Channel


def transport_options(settings: Settings) -> dict[str, Any]:
    """Celery's broker_transport_options; only `filesystem://` (the demo's broker) needs any.

    Its folders live under OUTBOX_BROKER_FOLDER, shared by every process using the broker.
    Consumed messages are renamed into ``processed/`` beside the queue (atomic on one
    filesystem), and the consumer looks for new files several times per beat tick, since
    it takes about one message per look.
    """
    if not settings.broker_url.startswith(f"{FILESYSTEM}:"):
        return {}
    kombu_transport.TRANSPORT_ALIASES[FILESYSTEM] = f"{__name__}:Transport"
    folder = settings.broker_folder.absolute()
    queue, processed, control = folder / "queue", folder / "processed", folder / "control"
    for path in (queue, processed, control):
        path.mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(queue),
        "data_folder_out": str(queue),
        "processed_folder": str(processed),
        "store_processed": True,
        "control_folder": str(control),
        "polling_interval": min(settings.poll_interval.total_seconds() / 4, 0.25),
    }
