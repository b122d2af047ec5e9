"""The benchmarks' smoke run covers every benchmark, so that none can stop running unseen."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_every_benchmark_has_a_tiny_run() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        smoke = importlib.import_module("smoke")
    finally:
        sys.path.remove(str(BENCH))
    benchmarks = {path.stem for path in BENCH.glob("bench_*.py")}
    assert benchmarks == set(smoke.TINY), "bench/smoke.py's TINY names every bench/bench_*.py"
