"""Profile: the worker's CPU per message on its dispatch path, part by part, on PostgreSQL.

One Dispatcher runs in this process as a pool process runs it (Settings, make_engine and a
WirayaClient; no Celery around it) over a backlog in PostgreSQL, sending to the sandbox (a process
of its own, 20 ms latency), and after every dispatch adds its figures to the metrics counters in
Redis as the task does. Each part is the cumulative CPU time of the functions it names; the parts
do not nest, and "other" is the rest of the dispatch loop.

Two drains, each on a fresh copy of the backlog. The first wraps only the named functions in a
CPU timer (time.process_time, a few calls per batch: no profiler's per-call overhead), and gives
the worker's whole CPU per message. The second runs under cProfile timed by CPU time, for the
same parts as cProfile sees them and the functions with the most CPU of their own; cProfile adds
a cost to every Python call, so its figures are larger and lean towards code of many small calls.

Run: .venv/bin/python bench/bench_profile.py [--messages 20000] [--latency-ms 20] [--batch 100]
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import pstats
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import bench_drain
import support
from sqlalchemy import Connection, Engine

from sandbox.testing import SandboxAdmin
from worker.database import make_engine
from worker.dispatch import dispatcher as dispatcher_module
from worker.dispatch import permits as permits_module
from worker.dispatch import recorder as recorder_module
from worker.dispatch.dispatcher import Dispatcher
from worker.dispatch.gate.pacing import Pacing
from worker.dispatch.gate.policy import Gate
from worker.dispatch.summary import BatchState
from worker.ops.counters import record_batch
from worker.settings import Settings
from worker.wiraya import client as client_module
from worker.wiraya.client import WirayaClient

TEMPLATE = "outbox_bench_profile_backlog"
RUN = "outbox_bench_profile"
TOP_FUNCTIONS = 12

# The named parts of one dispatch: the functions whose cumulative CPU each is, by where the
# dispatch path looks them up (a module's name, or a class's method).
PARTS: list[tuple[str, list[tuple[object, str]]]] = [
    ("gate read", [(Gate, "read"), (Gate, "permit")]),
    ("pool checkout (pre-ping) and return", [(Engine, "connect"), (Connection, "close")]),
    ("claim statement", [(permits_module, "claim")]),
    ("screening", [(dispatcher_module, "screen")]),
    ("building the request (codec encode)", [(client_module, "encode_request")]),
    ("HTTP exchange", [(WirayaClient, "_exchange")]),
    ("parsing the answer", [(client_module, "interpret_response")]),
    ("building row results", [(dispatcher_module, "results_of")]),
    ("record statement", [(recorder_module, "record")]),
    ("gate notes and request slot", [(Gate, "answered"), (Pacing, "book_slot")]),
    ("metrics counters to Redis", [(sys.modules[__name__], "record_batch")]),
]
OTHER = "other (the rest of the loop)"

Key = tuple[str, int, str]


def drain_loop(dispatcher: Dispatcher, broker: str, messages: int) -> int:
    """Dispatch as the task does (then its counters) until ``messages`` are finished."""
    finished = 0
    while finished < messages:
        summary = dispatcher.dispatch()
        record_batch(summary, broker)
        finished += summary.accepted + summary.failed
        if summary.state is not BatchState.SENT:
            raise RuntimeError(f"the dispatch ended {summary.state.value}: {summary.alarm}")
    return finished


def drained(
    sandbox: support.Process,
    broker: str,
    messages: int,
    batch: int,
    *,
    started: Callable[[], object] = lambda: None,
    ended: Callable[[], object] = lambda: None,
) -> tuple[int, float, float]:
    """Drain a fresh copy of the backlog; after a first batch (connections opened, caches
    filled), ``started``, then the messages sent, the worker's CPU seconds and seconds."""
    with support.scratch_database(RUN, template=TEMPLATE) as url:
        bench_drain.release(url)
        settings = Settings.from_environ(
            {"OUTBOX_BATCH_SIZE": str(batch)},
            OUTBOX_DATABASE_URL=url,
            WIRAYA_BASE_URL=sandbox.url,
            CELERY_BROKER_URL=broker,
        )
        engine = make_engine(url)
        with WirayaClient.from_settings(settings) as client:
            dispatcher = Dispatcher(settings, engine, client)
            warm = dispatcher.dispatch_once(wake=False).claimed
            started()
            cpu, wall = time.process_time(), time.monotonic()
            sent = drain_loop(dispatcher, broker, messages - warm)
            cpu, seconds = time.process_time() - cpu, time.monotonic() - wall
            ended()
        engine.dispose()
    return sent, cpu, seconds


@contextmanager
def part_timers() -> Iterator[defaultdict[str, float]]:
    """CPU seconds spent in each part's functions while the block runs (each wrapped in a timer)."""
    spent: defaultdict[str, float] = defaultdict(float)
    originals = []
    for part, places in PARTS:
        for owner, attribute in places:
            original = getattr(owner, attribute)
            originals.append((owner, attribute, original))
            setattr(owner, attribute, _timed(original, part, spent))
    try:
        yield spent
    finally:
        for owner, attribute, original in reversed(originals):
            setattr(owner, attribute, original)


def _timed(
    function: Callable[..., Any], part: str, spent: defaultdict[str, float]
) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            spent[part] += time.process_time() - started

    return timed


def function_of(owner: object, attribute: str) -> Callable[..., Any]:
    function: Callable[..., Any] = inspect.unwrap(getattr(owner, attribute))
    return function


def key_of(function: Callable[..., Any]) -> Key:
    """How cProfile names a function: its file, first line and name."""
    code = function.__code__
    return code.co_filename, code.co_firstlineno, code.co_name


def name_of(function: Callable[..., Any]) -> str:
    return f"{function.__module__.removeprefix('sqlalchemy.engine.')}.{function.__qualname__}"


def profiled_parts(stats: pstats.Stats) -> tuple[defaultdict[str, float], float]:
    """Each part's cumulative CPU seconds under cProfile, and the whole loop's."""
    table: dict[Key, tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    cumulative = {key: row[3] for key, row in table.items()}
    spent: defaultdict[str, float] = defaultdict(float)
    for part, places in PARTS:
        for owner, attribute in places:
            spent[part] += cumulative.get(key_of(function_of(owner, attribute)), 0.0)
    return spent, cumulative[key_of(drain_loop)]


def breakdown(
    timed: defaultdict[str, float],
    total: float,
    sent: int,
    profiled: defaultdict[str, float],
    profiled_total: float,
    profiled_sent: int,
) -> list[str]:
    """One line per part: CPU µs per message and share, timed and under cProfile."""
    lines = [
        f"{'part':<38} {'µs/msg':>7} {'share':>6}   {'cProfile µs/msg':>15} {'share':>6}  functions"
    ]
    parts = [*(part for part, _ in PARTS), OTHER]
    timed[OTHER] = total - sum(timed.values())
    profiled[OTHER] = profiled_total - sum(profiled.values())
    names = {
        part: ", ".join(name_of(function_of(*place)) for place in places) for part, places in PARTS
    }
    for part in parts:
        lines.append(
            f"{part:<38} {timed[part] / sent * 1e6:>7.1f} {timed[part] / total:>6.1%}   "
            f"{profiled[part] / profiled_sent * 1e6:>15.1f} {profiled[part] / profiled_total:>6.1%}"
            f"  {names.get(part, '')}"
        )
    lines.append(
        f"{'worker CPU per message':<38} {total / sent * 1e6:>7.1f} {1:>6.0%}   "
        f"{profiled_total / profiled_sent * 1e6:>15.1f} {1:>6.0%}"
    )
    return lines


def top_functions(stats: pstats.Stats, sent: int) -> list[str]:
    """The functions with the most CPU of their own (callees excluded), per message."""
    table: dict[Key, tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    ranked = sorted(table.items(), key=lambda item: item[1][2], reverse=True)[:TOP_FUNCTIONS]
    return [
        f"  {row[2] / sent * 1e6:6.1f} µs/msg  {row[1]:>7,} calls  {name} ({path}:{line})"
        for (path, line, name), row in ranked
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--batch", type=int, default=Settings.model_fields["batch_size"].default)
    args = parser.parse_args()
    support.heading(
        f"profile: one in-process Dispatcher, {args.messages:,} messages in PostgreSQL, "
        f"batches of {args.batch}, sandbox latency {args.latency_ms:g} ms"
    )
    print(support.load_average(), flush=True)
    bench_drain.build_backlog(args.messages, TEMPLATE)
    try:
        with (
            support.sandbox("--latency-ms", str(args.latency_ms)) as sandbox,
            support.redis_server() as redis,
        ):
            admin = SandboxAdmin(sandbox.url)
            with part_timers() as timed:
                sent, cpu, seconds = drained(
                    sandbox, redis.url, args.messages, args.batch, started=timed.clear
                )
            print(
                f"timed parts: {sent:,} messages in {seconds:.1f} s ({sent / seconds:,.0f} "
                f"messages/s, one dispatcher); worker CPU {cpu * 1e6 / sent:.1f} µs per message "
                f"({cpu * 1e3 / sent * args.batch:.1f} ms per batch of {args.batch})",
                flush=True,
            )
            admin.reset()
            profiler = cProfile.Profile(time.process_time)
            profiled_sent, profiled_cpu, _ = drained(
                sandbox,
                redis.url,
                args.messages,
                args.batch,
                started=profiler.enable,
                ended=profiler.disable,
            )
    finally:
        support.drop_database(TEMPLATE)
    stats = pstats.Stats(profiler)
    profiled, profiled_total = profiled_parts(stats)
    print(f"under cProfile: worker CPU {profiled_cpu * 1e6 / profiled_sent:.1f} µs per message")
    print("\n".join(breakdown(timed, cpu, sent, profiled, profiled_total, profiled_sent)))
    print("largest CPU of their own, under cProfile:")
    print("\n".join(top_functions(stats, profiled_sent)))
    print(support.load_average(), flush=True)


if __name__ == "__main__":
    main()
