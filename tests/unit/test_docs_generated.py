"""The site's generated pages: configuration.md from the settings classes, cli.md from the
`outbox` parser, and the build refusing a page whose hand-written part disagrees with the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_docs_references import docs_hook
from worker.ops.cli import build_parser
from worker.settings import ReceiverSettings, Settings

DOCS = Path(__file__).resolve().parents[2] / "docs"


def page(name: str) -> str:
    return (DOCS / name).read_text()


def render(name: str, text: str) -> str:
    rendered: str = docs_hook().render(name, text)
    return rendered


def test_every_variable_has_a_row_with_the_class_default() -> None:
    table = render("configuration.md", page("configuration.md"))
    for settings in (Settings, ReceiverSettings):
        for field in settings.model_fields.values():
            assert f"| `{field.alias}` |" in table
    assert "| `OUTBOX_BATCH_SIZE` | messages per call, to start with | 100 |" in table
    assert "| `OUTBOX_RETENTION_SECONDS` |" in table and "| 2592000 (30 days) |" in table


def test_a_variable_without_a_meaning_stops_the_build() -> None:
    text = page("configuration.md").replace("- `OUTBOX_RATE_LIMIT`:", "- dropped:")
    with pytest.raises(docs_hook().DocsError, match="OUTBOX_RATE_LIMIT: read by the settings"):
        render("configuration.md", text)


def test_a_meaning_without_a_variable_stops_the_build() -> None:
    text = page("configuration.md").replace(
        "<!-- /settings -->", "- `OUTBOX_NOT_READ`: nothing\n<!-- /settings -->"
    )
    with pytest.raises(docs_hook().DocsError, match="OUTBOX_NOT_READ, which no settings class"):
        render("configuration.md", text)


def test_a_default_written_beside_the_classs_own_stops_the_build() -> None:
    text = page("configuration.md").replace(
        "- `OUTBOX_BATCH_SIZE`:", "- `OUTBOX_BATCH_SIZE` (default: 50):"
    )
    with pytest.raises(docs_hook().DocsError, match="OUTBOX_BATCH_SIZE: the class's default"):
        render("configuration.md", text)


def test_every_command_of_the_parser_has_its_reference() -> None:
    reference = render("cli.md", page("cli.md"))
    commands = [a for a in build_parser()._actions if hasattr(a, "choices") and a.choices]
    names = [name for action in commands for name in action.choices]
    assert "retry" in names
    for name in names:
        assert f"### `outbox {name}`" in reference
    assert "| `--renew-age` |" in reference


def test_a_command_missing_from_the_overview_stops_the_build() -> None:
    lines = [
        line for line in page("cli.md").splitlines() if not line.startswith("| `outbox resume")
    ]
    with pytest.raises(docs_hook().DocsError, match="outbox resume: in the parser, not in"):
        render("cli.md", "\n".join(lines))
