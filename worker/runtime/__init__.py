"""The Celery glue: the app, its tasks, beat's scheduler, the wake-up watchers, the demo's broker.

The top layer: may import everything below it (`worker.ops`, `worker.dispatch`,
`worker.wiraya`), but pool processes load only what dispatching needs: no Flower, Prometheus
server or sandbox code (import-linter checks it).
"""
