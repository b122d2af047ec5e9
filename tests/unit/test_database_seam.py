"""No module outside the database seam (``models/databases``) asks which database it runs on.

The scanner reads each module's syntax tree and names, by file and line, every place that tells
the databases apart: reading ``dialect.name``, comparing a backend or driver name, comparing
with or keying on a database's name ("sqlite", "postgresql"), ``startswith`` on one, a helper
named like ``is_sqlite``, or a test of which seam class it got. Schema declarations that name a
database for SQLAlchemy (``with_variant(..., "sqlite")``, ``postgresql_where=``) are not
branches: SQLAlchemy picks them itself.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import ArgumentError

from models.databases import DATABASES, database_at, database_of
from models.databases.database import Database

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("models", "worker", "sandbox")
SEAM = ROOT / "models" / "databases"
NAMES = frozenset({"sqlite", "postgresql", "postgres", "pg"})
HELPER = re.compile(r"^_*(is|on|uses?|in)_(sqlite|postgres(ql)?|pg)$")
BACKEND_READERS = frozenset({"get_backend_name", "get_driver_name", "get_dialect"})
SEAM_CLASSES = frozenset({"PostgreSQL", "SQLite", "POSTGRESQL", "SQLITE"})


def _names_a_database(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and str(node.value).lower() in NAMES


def _reads_the_backend(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in BACKEND_READERS
    )


def _compared(node: ast.Compare) -> str | None:
    sides = [node.left, *node.comparators]
    elements = [
        element
        for side in sides
        if isinstance(side, ast.Tuple | ast.List | ast.Set)
        for element in side.elts
    ]
    if any(_names_a_database(side) for side in [*sides, *elements]):
        return "compares with a database's name"
    if any(_reads_the_backend(side) for side in sides):
        return "compares the URL's backend or driver"
    if any(isinstance(side, ast.Name) and side.id in SEAM_CLASSES for side in sides):
        return "compares with one seam class"
    return None


def _called(node: ast.Call) -> str | None:
    method = node.func.attr if isinstance(node.func, ast.Attribute) else None
    if method in {"startswith", "endswith"} and any(map(_names_a_database, node.args)):
        return "tests a URL's prefix for a database's name"
    is_instance = isinstance(node.func, ast.Name) and node.func.id == "isinstance"
    if is_instance and SEAM_CLASSES & set(re.findall(r"\w+", ast.unparse(node))):
        return "tests which seam class it got"
    return None


def _why(node: ast.AST) -> str | None:
    """Why ``node`` tells the databases apart; None when it does not."""
    reads_name = isinstance(node, ast.Attribute) and node.attr == "name"
    if reads_name and "dialect" in ast.unparse(node.value):  # type: ignore[attr-defined]
        return "reads dialect.name"
    if isinstance(node, ast.Compare):
        return _compared(node)
    if isinstance(node, ast.Call):
        return _called(node)
    if isinstance(node, ast.Dict) and any(
        key is not None and _names_a_database(key) for key in node.keys
    ):
        return "keys a mapping by a database's name"
    if isinstance(node, ast.Subscript) and _names_a_database(node.slice):
        return "looks up by a database's name"
    if isinstance(node, ast.keyword | ast.arg) and str(node.arg).lower() in NAMES:
        return "passes which database it is as a flag"
    name = getattr(node, "name", None) or getattr(node, "attr", None) or getattr(node, "id", None)
    if isinstance(name, str) and HELPER.match(name):
        return f"names a helper {name}"
    return None


def find_branches(source: str, filename: str = "<snippet>") -> list[str]:
    """``file:line: why`` for every place in ``source`` that tells the databases apart."""
    found = set()
    for node in ast.walk(ast.parse(source, filename)):
        why = _why(node)
        if why is not None:
            found.add((node.lineno, why))  # type: ignore[attr-defined]
    return [f"{filename}:{line}: {why}" for line, why in sorted(found)]


def _outside_the_seam() -> list[Path]:
    return [
        path
        for folder in SCANNED
        for path in sorted((ROOT / folder).rglob("*.py"))
        if SEAM not in path.parents
    ]


def test_no_module_outside_the_seam_asks_which_database_it_runs_on() -> None:
    modules = _outside_the_seam()
    assert len(modules) > 100  # the scan reads the code, not an empty folder
    branches = [
        branch
        for path in modules
        for branch in find_branches(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert branches == [], "move these into models/databases:\n" + "\n".join(branches)


@pytest.mark.parametrize(
    "snippet",
    [
        'if connection.dialect.name == "sqlite":\n    pass',
        "kind = engine.dialect.name",
        "dialect = bind.dialect\nif dialect.name != 'postgresql':\n    pass",
        'sqlite = dialect == "sqlite"',
        'x = 1 if "postgresql" == name else 2',
        'if url.get_backend_name() != "sqlite":\n    pass',
        "same = make_url(a).get_backend_name() == make_url(b).get_backend_name()",
        'if name in ("sqlite", "postgresql"):\n    pass',
        'STATEMENTS = {"postgresql": "A", "sqlite": "B"}',
        'statement = STATEMENTS["sqlite"]',
        'if url.startswith("postgresql"):\n    pass',
        "def is_postgres(url):\n    return True",
        "flag = settings.is_sqlite",
        "if database is POSTGRESQL:\n    pass",
        "if isinstance(database, SQLite):\n    pass",
        "payload = _payload(reports, sqlite=True)",
        "def _time(moment, sqlite):\n    return moment",
    ],
)
def test_the_scanner_finds_each_kind_of_branch(snippet: str) -> None:
    assert find_branches(snippet), snippet


@pytest.mark.parametrize(
    "snippet",
    [
        'Column("id", BigInteger().with_variant(Integer(), "sqlite"))',
        "Index('ix', 'a', postgresql_where=text('a'), sqlite_where=text('a'))",
        'label = f"{url.get_backend_name()}://{url.host}"',
        'url = driver_url(url).set(drivername="postgresql")',
        "database = database_of(connection)\nif database.has_roles:\n    pass",
        '"""Only SQLite: dialect.name == "sqlite" is said here, in a docstring."""',
    ],
)
def test_the_scanner_leaves_what_is_not_a_branch(snippet: str) -> None:
    assert find_branches(snippet) == []


def test_a_planted_branch_is_named_by_file_and_line() -> None:
    source = 'import x\n\n\ndef f(connection):\n    return connection.dialect.name == "sqlite"\n'
    assert find_branches(source, "worker/planted.py") == [
        "worker/planted.py:5: compares with a database's name",
        "worker/planted.py:5: reads dialect.name",
    ]


@pytest.mark.parametrize("database", DATABASES, ids=lambda database: database.dialect)
def test_each_database_documents_every_method_of_the_seam(database: Database) -> None:
    wanted = {name for name, member in vars(Database).items() if inspect.isfunction(member)}
    assert wanted, "the interface states what a database must do"
    undocumented = [name for name in sorted(wanted) if not getattr(type(database), name).__doc__]
    assert undocumented == []
    assert all(getattr(type(database), name) is not getattr(Database, name) for name in wanted)


def test_a_database_the_outbox_does_not_run_on_is_refused_by_name() -> None:
    with pytest.raises(ArgumentError, match="PostgreSQL and SQLite, not mysql"):
        database_at("mysql://user@host/outbox")
    with pytest.raises(NotImplementedError, match="PostgreSQL and SQLite, not mysql"):
        database_of(mysql.dialect())


@pytest.mark.parametrize(
    ("url", "dialect"),
    [("sqlite:///outbox.db", "sqlite"), ("postgresql+psycopg://u@h/outbox", "postgresql")],
)
def test_a_url_and_its_engine_name_the_same_database(url: str, dialect: str) -> None:
    engine = create_engine(url)
    assert database_at(url) is database_of(engine) is database_of(engine.dialect)
    assert database_at(url).dialect == dialect
