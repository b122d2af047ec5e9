"""Flower as ops see it: a real headless Chromium logs in and finds the dispatch summaries.

Real worker, beat and Flower processes dispatch messages from the sandbox; Debian's
`chromium`, driven by Playwright (never a downloaded browser), opens the Tasks page with basic
auth and reads the `outbox.dispatch` rows. The screenshot it takes is kept in the test's
folder, and copied to OUTBOX_SCREENSHOTS when set (`OUTBOX_SCREENSHOTS=docs` refreshes
the picture in docs/operations.md#flower).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import service_missing
from tests.e2e.harness import (
    Stack,
    accepted_in_summaries,
    flower_dispatches,
    project_messages,
    wait_for,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(180)]

CHROMIUM = Path(os.environ.get("OUTBOX_TEST_CHROMIUM", "/usr/bin/chromium"))
# Headless on a machine without a display or a network beyond loopback: no GPU, no sandbox
# (root in CI), and none of the background connections a closed network refuses.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
USER, PASSWORD = "ops", "flower-browser-password"
SCREENSHOT = "flower-tasks.png"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Playwright's Chromium, Debian's binary, on a fresh profile; logs in with basic auth."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        service_missing("Playwright (pip package playwright)", error)
    if not CHROMIUM.exists():
        service_missing("Chromium", FileNotFoundError(f"{CHROMIUM} (Debian package chromium)"))
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            http_credentials={"username": USER, "password": PASSWORD},
            viewport={"width": 1600, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


def test_ops_find_dispatch_summaries_on_flowers_tasks_page(
    stack: Stack, browser: Any, tmp_path: Path
) -> None:
    admin = stack.start_sandbox("--latency-ms", "20")
    flower = stack.start_flower(f"{USER}:{PASSWORD}")
    stack.start_outbox()
    waves, per_wave = 4, 150  # traffic in waves, as in a day's work: a dispatch or more each
    total = waves * per_wave
    for wave in range(waves):
        stack.enqueue(project_messages(f"flower-{wave}", per_wave))
        stack.wait_all_final(per_wave * (wave + 1), timeout=60)
    wait_for(
        lambda: accepted_in_summaries(flower_dispatches(flower, f"{USER}:{PASSWORD}")) == total,
        timeout=30,
        what="Flower to have every dispatch summary",
    )

    page = browser.new_page()
    answer = page.goto(f"{flower}/tasks?name=outbox.dispatch")
    assert answer is not None and answer.status == 200  # logged in: no 401
    rows = page.locator("#tasks-table tbody tr", has_text="outbox.dispatch")
    rows.first.wait_for(timeout=20_000)
    shown = rows.all_inner_texts()
    assert shown and all("SUCCESS" in row for row in shown)
    assert any("'state': 'sent'" in row and "'accepted': " in row for row in shown), shown[:3]
    assert page.locator("#tasks-table tbody tr", has_text="outbox.tick").count() == 0

    screenshot = tmp_path / SCREENSHOT
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000  # a rendered page, not a blank one
    if target := os.environ.get("OUTBOX_SCREENSHOTS"):
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(target) / SCREENSHOT)
    assert len(admin.ledger()) == total


def test_flower_refuses_a_browser_without_the_login(stack: Stack, browser: Any) -> None:
    flower = stack.start_flower(f"{USER}:not-the-password")
    answer = browser.new_page().goto(f"{flower}/tasks")
    assert answer is not None and answer.status == 401
