"""Where each section of the former one-file manual went: README's `##`/`###` headings and those
of the former architecture page, each with the page of the site that holds it now. README stays
short."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README_MAX_LINES = 250

# (the old heading, the page that holds its text now)
MOVED = [
    ("Quickstart", "index.md"),
    ("Producing messages", "producing.md"),
    ("From Python, inside your own transaction", "producing.md"),
    ("From an async application (FastAPI)", "producing.md"),
    ("From any language, in plain SQL", "producing.md"),
    ("How it works", "how-it-works.md"),
    ("The sending gate", "sending-gate.md"),
    ("Waking up", "how-it-works.md"),
    ("The API client", "how-it-works.md"),
    ("Message states", "how-it-works.md"),
    ("Delivery reports", "delivery-reports.md"),
    ("Wiraya's side: the callback template", "delivery-reports.md"),
    ("What it answers", "delivery-reports.md"),
    ("How reports are stored", "delivery-reports.md"),
    ("Reading delivery status from application code", "delivery-reports.md"),
    ("Guarantees", "guarantees.md"),
    ("The deterministic simulator", "guarantees.md"),
    ("Performance", "performance.md"),
    ("Configuration", "configuration.md"),
    ("Database migrations", "migrations.md"),
    ("The sandbox: a local Wiraya", "sandbox.md"),
    ("The demo", "sandbox.md"),
    ("The `outbox` CLI", "cli.md"),
    ("Deployment", "deployment.md"),
    ("docker compose", "deployment.md"),
    ("Locked dependencies", "deployment.md"),
    ("Plain processes", "deployment.md"),
    ("Behind a proxy", "deployment.md"),
    ("Behind PgBouncer (transaction pooling)", "deployment.md"),
    ("RabbitMQ as the broker", "deployment.md"),
    ("Flower", "operations.md"),
    ("Metrics", "operations.md"),
    ("Security", "security.md"),
    ("A role per process", "security.md"),
    ("Each process checks its rights at start", "security.md"),
    ("Secrets", "security.md"),
    ("In docker compose", "security.md"),
    ("Runbook", "runbook.md"),
    # the former architecture page, merged into how-it-works.md
    ("The path of one message", "how-it-works.md"),
    ("What each package owns (and may import)", "how-it-works.md"),
    ("The shared state, and why it is safe", "how-it-works.md"),
    ("Where to add", "how-it-works.md"),
]


def headings(text: str) -> set[str]:
    """The text of every Markdown heading outside code blocks."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return {match.strip() for match in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


@pytest.mark.parametrize(("heading", "page"), MOVED, ids=[heading for heading, _ in MOVED])
def test_each_former_section_has_a_page(heading: str, page: str) -> None:
    assert heading in headings((ROOT / "docs" / page).read_text())


def test_every_page_is_in_the_sites_navigation() -> None:
    navigation = (ROOT / "mkdocs.yml").read_text()
    listed = set(re.findall(r"^\s+- [^:#]+: ([a-z-]+\.md)$", navigation, flags=re.M))
    assert {page for _, page in MOVED} <= listed


def test_a_heading_no_page_holds_is_found() -> None:
    assert "Where to add" not in headings("# Page\n\n```sh\n# Where to add\n```\n## Elsewhere\n")


def test_readme_stays_short_and_points_into_the_site() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    linked = set(re.findall(r"\]\(docs/([a-z-]+\.md)", readme))
    assert {page for _, page in MOVED} - {"index.md"} <= linked
