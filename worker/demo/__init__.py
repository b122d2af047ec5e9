"""`outbox demo`: the outbox end to end on SQLite, a filesystem broker and the sandbox, no servers.

`run` starts and watches the processes, `messages` is what it enqueues and expects, `reports`
its delivery-report part (the receiver and the sandbox pushing to it), `output` what it prints.
"""
