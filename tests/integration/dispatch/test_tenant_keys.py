"""Each tenant's batch goes out under its own key (WIRAYA_API_KEYS), the others under
WIRAYA_API_KEY; a tenant with neither has its messages failed, the reason naming the tenant and
no key. The sandbox accepts the keys given and notes each message's key (both databases)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from models import NewMessage, Priority, Status, enqueue_many
from sandbox.ledger import key_fingerprint
from tests.integration.dispatch.harness import ALPHA, Outbox, recipient

KEYS = {"clinic": "key-of-the-clinic", "shop": "key-of-the-shop"}
DEFAULT_KEY = "key-of-everyone-else"


def enqueue(
    outbox: Outbox, tenant: str, count: int, first: int, priority: Priority = Priority.NORMAL
) -> list[str]:
    messages = [
        NewMessage.create(
            recipient=recipient(first + n),
            content=ALPHA,
            client_message_id=f"{tenant or 'default'}-{n}",
            tenant=tenant,
            priority=priority,
        )
        for n in range(count)
    ]
    with Session(outbox.engine) as session, session.begin():
        return enqueue_many(session, messages)


def listed(keys: dict[str, str]) -> str:
    return ",".join(f"{tenant}={key}" for tenant, key in keys.items())


def test_every_message_goes_out_under_its_tenants_key(outbox: Outbox) -> None:
    outbox.sandbox.service.set_api_key([*KEYS.values(), DEFAULT_KEY])
    sent = {
        "clinic": enqueue(outbox, "clinic", 3, 100),
        "shop": enqueue(outbox, "shop", 4, 200),
        "": enqueue(outbox, "", 2, 300),
    }
    dispatcher = outbox.dispatcher(WIRAYA_API_KEYS=listed(KEYS), WIRAYA_API_KEY=DEFAULT_KEY)

    summaries = [dispatcher.dispatch_once() for _ in range(4)]

    assert sorted(summary.accepted for summary in summaries) == [0, 2, 3, 4]  # one tenant each
    ledger = outbox.sandbox.ledger()
    for tenant, ids in sent.items():
        key = key_fingerprint(KEYS.get(tenant, DEFAULT_KEY))
        assert {ledger[cmid].key for cmid in ids} == {key}, tenant


def test_a_tenant_without_a_key_has_its_messages_failed_naming_it(outbox: Outbox) -> None:
    outbox.sandbox.service.set_api_key(list(KEYS.values()))
    enqueue(outbox, "town", 2, 400)
    clinic = enqueue(outbox, "clinic", 2, 500)
    dispatcher = outbox.dispatcher(WIRAYA_API_KEYS=listed(KEYS))

    summaries = [dispatcher.dispatch_once() for _ in range(3)]

    assert sorted((summary.failed, summary.accepted) for summary in summaries) == [
        (0, 0),
        (0, 2),
        (2, 0),
    ]
    with outbox.engine.connect() as connection:
        failed = connection.execute(
            text("SELECT status, last_error FROM outbox_messages WHERE tenant = 'town'")
        ).all()
    assert {row.status for row in failed} == {Status.FAILED}
    for row in failed:
        assert "tenant 'town'" in row.last_error and "no API key" in row.last_error
        assert not any(key in row.last_error for key in KEYS.values())
    assert set(outbox.sandbox.ledger()) == set(clinic)
