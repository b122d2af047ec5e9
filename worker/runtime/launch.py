"""`outbox-celery`: Celery's `worker` and `beat` commands without the `celery` command's plugins.

`celery -A worker worker` imports every command Celery has (its shell with prompt_toolkit, the
amqp REPL) and every plugin registered under the `celery.commands` entry point, Flower among
them (with Tornado and prometheus_client), before it reads its arguments. A pool process is a
fork of the worker's main process, so each would carry them all. `outbox-celery -A worker
worker ...` and `outbox-celery -A worker beat ...` run the same two commands of Celery with the
same options, reading the same CELERY_* variables, and import only those two; every other
`celery` command (`flower`, `inspect`, ...) is unchanged.
"""

from __future__ import annotations

from typing import Any

import click
from celery import maybe_patch_concurrency
from celery.app.utils import find_app
from celery.bin.base import CLIContext
from celery.bin.beat import beat
from celery.bin.worker import worker


@click.group()
@click.option("-A", "--app", "app_name", default="worker", show_default=True, help="The app.")
@click.pass_context
def outbox_celery(ctx: click.Context, app_name: str) -> None:
    """Run the outbox's Celery worker or beat."""
    ctx.obj = CLIContext(app=find_app(app_name), no_color=False, workdir=None, quiet=False)


outbox_celery.add_command(worker)
outbox_celery.add_command(beat)


def main(argv: list[str] | None = None) -> Any:
    """The `outbox-celery` command (`celery.__main__.main` without the other commands)."""
    maybe_patch_concurrency()  # -P eventlet/gevent, as `celery` does before anything else
    return outbox_celery.main(args=argv, prog_name="outbox-celery", auto_envvar_prefix="CELERY")
