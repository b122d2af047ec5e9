"""The FastAPI example of docs/producing.md#from-an-async-application-fastapi, run for real: an
order and its confirmation in one transaction."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, inspect, text

from tests.conftest import ROOT

PAGE = ROOT / "docs" / "producing.md"
HEADING = "## From an async application (FastAPI)"


def documented_example() -> str:
    """The first Python block under the page's FastAPI heading."""
    page = PAGE.read_text()
    section = page[page.index(HEADING) :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "no python block under the FastAPI heading"
    return match.group(1)


def async_url(engine: Engine) -> str:
    url = engine.url
    if url.get_backend_name() == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite")
    return url.render_as_string(hide_password=False)


@pytest.fixture
def example(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModuleType]:
    """The example as a module of its own, on the test's outbox database."""
    monkeypatch.setenv("APP_DATABASE_URL", async_url(engine))
    path = tmp_path / "shop_app.py"
    path.write_text(documented_example())
    spec = importlib.util.spec_from_file_location("shop_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["shop_app"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("shop_app", None)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS orders"))


def post_orders(example: ModuleType, *orders: dict[str, str]) -> list[httpx.Response]:
    """POST each order to the app through ASGI, its lifespan (startup, shutdown) around them."""

    async def main() -> list[httpx.Response]:
        app: Any = example.app
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
                return [await client.post("/orders", json=order) for order in orders]

    return asyncio.run(main())


def rows(engine: Engine, query: str) -> list[tuple[object, ...]]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(query))]


def test_an_order_and_its_confirmation_are_committed_together(
    engine: Engine, example: ModuleType
) -> None:
    [answer] = post_orders(example, {"customer": "John", "phone": "+46 70-123 45 67"})
    assert answer.status_code == 201, answer.text
    order_id = answer.json()["order_id"]

    assert "orders" in inspect(engine).get_table_names()
    assert rows(engine, "SELECT id, customer FROM orders") == [(order_id, "John")]
    outbox = rows(engine, "SELECT client_message_id, recipient, status FROM outbox_messages")
    assert outbox == [(f"order-{order_id}-confirmation", "46701234567", "pending")]


def test_a_refused_confirmation_rolls_the_order_back(engine: Engine, example: ModuleType) -> None:
    refused, good = post_orders(
        example,
        {"customer": "John", "phone": "070-123 45 67"},
        {"customer": "Jane", "phone": "+46709876543"},
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"].startswith("recipient: ")
    assert "national number" in refused.json()["detail"]
    assert good.status_code == 201, good.text

    assert [customer for _, customer in rows(engine, "SELECT id, customer FROM orders")] == ["Jane"]
    assert len(rows(engine, "SELECT id FROM outbox_messages")) == 1
