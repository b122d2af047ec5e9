"""A tenant per message, set by every producer: enqueue, enqueue_many, aenqueue and plain SQL
(a three-column INSERT keeps working and lands in the default tenant), on both databases."""

from __future__ import annotations

import asyncio
import json

from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from models import aenqueue, enqueue, enqueue_many
from tests.integration.models.test_async_producer import async_url

CONTENT = {"$type": "SMSProject", "projectId": 123, "placeholders": ["John"]}


def tenants(engine: Engine) -> dict[str, str]:
    with engine.connect() as connection:
        query = text("SELECT client_message_id, tenant FROM outbox_messages")
        return {cmid: tenant for cmid, tenant in connection.execute(query)}


def test_every_producer_sets_the_tenant(engine: Engine) -> None:
    with Session(engine) as session:
        row = enqueue(
            session,
            recipient="46701234567",
            content=CONTENT,
            client_message_id="one",
            tenant="clinic",
        )
        assert row.tenant == "clinic"
        enqueue_many(
            session,
            [
                {
                    "recipient": "46701234568",
                    "content": CONTENT,
                    "client_message_id": "many-a",
                    "tenant": "shop",
                },
                {"recipient": "46701234569", "content": CONTENT, "client_message_id": "many-b"},
            ],
        )
        default = enqueue(session, recipient="46701234560", content=CONTENT, client_message_id="d")
        assert default.tenant == ""
        session.commit()

    async def produce() -> None:
        application = create_async_engine(async_url(engine))
        try:
            async with AsyncSession(application) as session:
                await aenqueue(
                    session,
                    recipient="46701234561",
                    content=CONTENT,
                    client_message_id="async",
                    tenant="town",
                )
                await session.commit()
        finally:
            await application.dispose()

    asyncio.run(produce())
    assert tenants(engine) == {
        "one": "clinic",
        "many-a": "shop",
        "many-b": "",
        "d": "",
        "async": "town",
    }


def test_a_three_column_insert_lands_in_the_default_tenant_and_plain_sql_may_name_one(
    engine: Engine,
) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO outbox_messages (client_message_id, recipient, content) "
                "VALUES ('raw', '46701234567', :content)"
            ),
            {"content": json.dumps(CONTENT)},
        )
        connection.execute(
            text(
                "INSERT INTO outbox_messages (client_message_id, recipient, content, tenant) "
                "VALUES ('raw-shop', '46701234568', :content, 'shop')"
            ),
            {"content": json.dumps(CONTENT)},
        )
    assert tenants(engine) == {"raw": "", "raw-shop": "shop"}
