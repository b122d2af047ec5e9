"""The outbox worker: settings, database access, the Wiraya client, dispatcher and Celery app.

``celery -A worker ...`` finds the Celery app as ``worker.app``; it is built on first use so
that importing ``worker.wiraya`` or ``worker.settings`` alone needs no Celery configuration.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in {"app", "celery"}:
        from worker.runtime.celery_app import app

        return app
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
