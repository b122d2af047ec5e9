"""A dispatcher built before the pool forks gives each process its own jitter."""

from __future__ import annotations

import os
from pathlib import Path

from worker.database import make_engine
from worker.dispatch.dispatcher import Dispatcher
from worker.settings import Settings
from worker.wiraya.client import WirayaClient


def _draw_in_child(dispatcher: Dispatcher) -> float:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one draw, then out without running the parent's cleanup
        os.write(write, repr(dispatcher.rng.random()).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        return float(pipe.read())


def test_processes_forked_from_one_dispatcher_draw_different_jitter(tmp_path: Path) -> None:
    settings = Settings.from_environ(
        {"OUTBOX_DATABASE_URL": f"sqlite:///{tmp_path / 'outbox.db'}"},
        WIRAYA_BASE_URL="http://127.0.0.1:9",
    )
    client = WirayaClient.from_settings(settings)
    dispatcher = Dispatcher(settings, make_engine(settings.database_url), client)

    draws = {_draw_in_child(dispatcher) for _ in range(3)}

    client.close()
    assert len(draws) == 3
