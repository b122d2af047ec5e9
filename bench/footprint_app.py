"""The outbox's Celery app and one more task that tells which modules a pool process has loaded.

bench_footprint.py runs it as ``-A footprint_app`` (bench/ on PYTHONPATH): importing this module
adds nothing a pool process would not load anyway, so its modules are the outbox worker's.
"""

from __future__ import annotations

import os
import sys
import time

from worker.runtime.celery_app import app

TASK = "footprint.loaded_modules"


@app.task(name=TASK, ignore_result=False)
def loaded_modules(hold_seconds: float) -> dict[str, object]:
    """This process's pid and the names in its sys.modules, after a hold.

    The hold keeps the process busy, so that as many calls sent at once reach as many
    different pool processes.
    """
    time.sleep(hold_seconds)
    return {"pid": os.getpid(), "modules": sorted(sys.modules)}
