"""`python -m worker.ops.cli`: the `outbox` command, as the console script runs it."""

import sys

from worker.ops.cli.main import main

sys.exit(main())
