"""The dispatch core: claim due rows, screen them, send with splits, record, and the sending gate.

Runs without Celery or an HTTP library, so it is tested with a real database and the sandbox
alone. May import `models`, `worker.settings`, `worker.clock`, `worker.errors`, SQLAlchemy and
the API's plain data (`worker.wiraya.results`); never `worker.runtime`, `worker.ops`, Celery or
httpx (import-linter checks it).
"""
