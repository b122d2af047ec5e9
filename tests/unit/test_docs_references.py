"""Every `docs/<page>.md#<anchor>` named in the code, the deployment files and README points at a
page of the documentation site and at an anchor on it.

Anchors are computed as MkDocs computes them: Python-Markdown's toc extension over the page as the
site's build hook renders it (configuration.md and cli.md get generated headings).
"""

from __future__ import annotations

import importlib.util
import re
from functools import cache
from pathlib import Path
from types import ModuleType

import markdown

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = re.compile(r"docs/(?P<page>[a-z0-9_-]+\.md)(?:#(?P<anchor>[A-Za-z0-9_-]+))?")
FOLDERS = ("worker", "models", "sandbox", "bench", "tests", "deploy", "migrations")
FILES = ("Makefile", "docker-compose.yml", "Dockerfile", ".ci/run", "README.md", "CHANGELOG.md")
SUFFIXES = {".py", ".yml", ".yaml", ".json", ".sh", ".md", ".toml", ".ini", ".sql", ".txt"}


@cache
def docs_hook() -> ModuleType:
    """The site's build hook, which renders the generated pages."""
    path = ROOT / "docs" / "hooks" / "generated.py"
    spec = importlib.util.spec_from_file_location("docs_hook", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def anchors(docs: Path, page: str) -> set[str]:
    """The ids of every heading of ``page``, as MkDocs' toc extension makes them."""
    source = docs_hook().render(page, (docs / page).read_text(encoding="utf-8"))
    converter = markdown.Markdown(
        extensions=["toc", "tables", "attr_list", "admonition", "pymdownx.superfences"]
    )
    converter.convert(source)
    found: set[str] = set()
    tokens = list(converter.toc_tokens)  # type: ignore[attr-defined]
    while tokens:
        token = tokens.pop()
        found.add(token["id"])
        tokens.extend(token["children"])
    return found


def sources(root: Path) -> list[Path]:
    """The files whose references are checked."""
    found = [root / name for name in FILES if (root / name).is_file()]
    for folder in FOLDERS:
        found += [
            path
            for path in sorted((root / folder).rglob("*"))
            if path.is_file() and (path.suffix in SUFFIXES or path.name == "Dockerfile")
        ]
    return found


def references(root: Path) -> list[tuple[str, str, str | None]]:
    """(where, page, anchor) for every docs reference in the checked files."""
    found = []
    for path in sources(root):
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in REFERENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            where = f"{path.relative_to(root)}:{line}"
            found.append((where, match["page"], match["anchor"]))
    return found


def broken(root: Path, docs: Path) -> list[str]:
    """Each reference whose page or anchor does not exist, with where it is."""
    problems = []
    for where, page, anchor in references(root):
        if not (docs / page).is_file():
            problems.append(f"{where}: docs/{page} does not exist")
        elif anchor is not None and anchor not in anchors(docs, page):
            problems.append(f"{where}: docs/{page} has no anchor #{anchor}")
    return problems


def test_every_reference_points_at_a_page_and_an_anchor() -> None:
    assert broken(ROOT, ROOT / "docs") == []


def test_the_code_points_into_the_site() -> None:
    pages = {page for _, page, _ in references(ROOT)}
    assert {"runbook.md", "security.md", "sending-gate.md", "operations.md"} <= pages


def test_a_missing_page_or_anchor_is_reported(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "runbook.md").write_text("# Runbook\n\n## Stuck leases\n\nText.\n")
    (tmp_path / "worker").mkdir()
    good, missing_page, missing_anchor = (
        "docs/runbook.md#stuck-leases",
        "docs/" + "nowhere.md#stuck-leases",
        "docs/runbook.md#" + "stuck-lease",
    )
    (tmp_path / "worker" / "module.py").write_text(
        f"# {good}\n# {missing_page}\n# {missing_anchor}\n"
    )
    assert broken(tmp_path, docs) == [
        f"worker/module.py:2: {missing_page.partition('#')[0]} does not exist",
        "worker/module.py:3: docs/runbook.md has no anchor #stuck-lease",
    ]


def test_anchors_are_computed_as_mkdocs_computes_them(tmp_path: Path) -> None:
    (tmp_path / "page.md").write_text(
        "# The `outbox` CLI\n\n## Wiraya's side: the callback template\n\n"
        "```sh\n# not a heading\n```\n\n## Behind PgBouncer (transaction pooling)\n"
    )
    assert anchors(tmp_path, "page.md") == {
        "the-outbox-cli",
        "wirayas-side-the-callback-template",
        "behind-pgbouncer-transaction-pooling",
    }
