"""The operators' tooling: the `outbox` CLI, its reads and changes and their SQL, metrics, the demo.

May import `worker.dispatch` (the gate's read-out) and `worker.wiraya`, never `worker.runtime`:
operator commands need no Celery app (import-linter checks it). The demo starts Celery as
separate processes, as a user would.
"""
