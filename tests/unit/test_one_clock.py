"""One clock: the worker reads the wall clock only through worker.clock.utc_now."""

from __future__ import annotations

import ast
from pathlib import Path

WORKER = Path(__file__).resolve().parents[2] / "worker"


def _reads_of_the_wall_clock(source: str) -> list[int]:
    """Lines calling datetime.now / utcnow / time.time-like readers of the date directly."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in {"now", "utcnow", "today"}
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in {"datetime", "date"}
        ):
            lines.append(node.lineno)
    return lines


def test_only_the_clock_module_reads_the_date() -> None:
    found = {
        f"{path.relative_to(WORKER.parent)}:{line}"
        for path in WORKER.rglob("*.py")
        if path.name != "clock.py"
        for line in _reads_of_the_wall_clock(path.read_text())
    }
    assert not found


def test_the_check_sees_a_direct_read() -> None:
    assert _reads_of_the_wall_clock("from datetime import datetime\nx = datetime.now()\n") == [2]
