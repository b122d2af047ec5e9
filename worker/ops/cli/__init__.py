"""`outbox`: the operator's command line (stats, inspect, retry, cancel, prune, migrate, ...).

The package parses arguments and prints; what it reads is in `worker.ops.snapshot` (SQL in
`worker.ops.queries`), and each change in one module: `worker.ops.retry`, `worker.ops.cancel`,
and `worker.ops.changes` for prune and resume (SQL in `worker.ops.writes`). Errors
an operator can act on print one line, ``outbox: ...``, and exit non-zero: 1 for a problem with
the data or the database, 2 for a wrong command line, 130 when interrupted.
"""

from worker.ops.cli.main import build_parser, main
from worker.ops.cli.times import human_duration, parse_duration, parse_moment

__all__ = ["build_parser", "human_duration", "main", "parse_duration", "parse_moment"]
