"""Every benchmark once at a tiny size: it runs and prints its figures, none checked for speed.

A benchmark that no longer runs (an import moved, a statement renamed, a setting gone) fails
here the day it breaks, not on the day someone next measures. Each runs as a user runs it
(`.venv/bin/python bench/<name>.py <tiny arguments>`), its output shown as it comes; the
figures of a tiny run mean nothing. Exits non-zero naming each benchmark that failed.

Run: .venv/bin/python bench/smoke.py [name ...]   (make bench-smoke)
"""

from __future__ import annotations

import subprocess
import sys
import time

import support

# Each benchmark with arguments that make it short; the ones with none are short already.
TINY: dict[str, list[str]] = {
    "bench_producer": ["--messages", "500"],
    "bench_screen": ["--rows", "500"],
    "bench_drain": ["--messages", "2000", "--quick", "--naive-seconds", "0"],  # naive: in peers
    "bench_bloat": ["--messages", "2000"],
    "bench_peers": ["--messages", "2000", "--naive-seconds", "2"],
    "bench_profile": ["--messages", "1000"],
    "bench_latency": ["--rate", "20", "--seconds", "2"],
    "bench_gate": ["--requests", "5", "--outage-seconds", "2"],
    "bench_lanes": ["--bulk", "3000", "--urgent-rate", "5"],
    "bench_scale": ["--history", "10000"],
    "bench_sandbox": ["--seconds", "0.5"],
    "bench_ops_reads": ["--history", "200000"],  # a prune chunk needs 5,000 rows 29 days old
    "bench_startup": ["--rounds", "1", "--launcher", "outbox-celery"],
    "bench_footprint": ["--messages", "500", "--launcher", "outbox-celery"],
    "bench_reports": ["--messages", "2000"],
    "bench_receiver_limits": [],
    "bench_migrate": ["--rows", "2000"],
    "bench_start_check": ["--runs", "3"],
    "bench_poison": [],
    "bench_policy": ["--messages", "1000"],
    "bench_tracing": ["--messages", "500", "--rounds", "1"],
    "bench_tenants": ["--big", "500", "--small", "10", "--backlog", "500"],
}
# Each run's bound: a tiny run that takes this long is stuck.
TIMEOUT = 240


def run(name: str) -> tuple[bool, float]:
    """Run one benchmark tiny; whether it succeeded, and its seconds."""
    argv = [sys.executable, str(support.ROOT / "bench" / f"{name}.py"), *TINY[name]]
    print(f"\n### {name} {' '.join(TINY[name])}", flush=True)
    started = time.monotonic()
    try:
        done = subprocess.run(argv, cwd=support.ROOT, timeout=TIMEOUT, check=False)
        ok = done.returncode == 0
    except subprocess.TimeoutExpired:
        print(f"{name}: still running after {TIMEOUT} s, stopped", flush=True)
        ok = False
    return ok, time.monotonic() - started


def main() -> None:
    names = sys.argv[1:] or list(TINY)
    unknown = [name for name in names if name not in TINY]
    if unknown:
        sys.exit(f"unknown benchmarks: {', '.join(unknown)} (known: {', '.join(TINY)})")
    results = {name: run(name) for name in names}
    print("\nsmoke run of the benchmarks:")
    for name, (ok, seconds) in results.items():
        print(f"  {name}: {'ran' if ok else 'FAILED'} in {seconds:.1f} s")
    total = sum(seconds for _, seconds in results.values())
    print(f"  in all {total:.0f} s; {support.load_average()}")
    failed = [name for name, (ok, _) in results.items() if not ok]
    if failed:
        sys.exit(f"benchmarks that did not run: {', '.join(failed)}")


if __name__ == "__main__":
    main()
