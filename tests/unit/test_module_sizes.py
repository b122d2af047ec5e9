"""Modules and classes stay small enough to read: at most 400 lines a module, 200 a class."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("models", "worker", "sandbox")
MODULE_LINES, CLASS_LINES = 400, 200


def _sources() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def _oversized(path: Path, root: Path = ROOT) -> list[str]:
    source, name = path.read_text(), path.relative_to(root)
    found = []
    if len(source.splitlines()) > MODULE_LINES:
        found.append(f"{name}: {len(source.splitlines())} lines")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
            length = node.end_lineno - node.lineno + 1
            if length > CLASS_LINES:
                found.append(f"{name}: class {node.name}, {length} lines")
    return found


def test_no_module_or_class_is_oversized() -> None:
    assert [problem for path in _sources() for problem in _oversized(path)] == []


def test_the_check_sees_an_oversized_class(tmp_path: Path) -> None:
    big = tmp_path / "big.py"
    big.write_text("class Big:\n" + "    x = 1\n" * CLASS_LINES)
    assert _oversized(big, tmp_path) == [f"big.py: class Big, {CLASS_LINES + 1} lines"]
