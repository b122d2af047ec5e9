"""A tenant's refused key stops that tenant only: the other tenants keep sending under theirs,
the refused tenant's messages wait unspent, and its key is tried again on its own slow cadence
(design.md 5a, invariant 4; both databases)."""

from __future__ import annotations

from models import Status
from tests.integration.dispatch.harness import Outbox
from tests.integration.dispatch.test_tenant_keys import DEFAULT_KEY, KEYS, enqueue, listed


def test_a_refused_tenant_key_holds_back_that_tenant_only(outbox: Outbox) -> None:
    outbox.sandbox.service.set_api_key([KEYS["shop"], DEFAULT_KEY])  # the clinic's is refused
    clinic = enqueue(outbox, "clinic", 3, 100)
    dispatcher = outbox.dispatcher(WIRAYA_API_KEYS=listed(KEYS), WIRAYA_API_KEY=DEFAULT_KEY)
    dispatcher.dispatch_once()  # the clinic's batch is refused
    shop = enqueue(outbox, "shop", 4, 200)

    outbox.drain(dispatcher)

    rows = outbox.rows()
    assert {rows[cmid].status for cmid in shop} == {Status.ACCEPTED}
    assert {rows[cmid].status for cmid in clinic} == {Status.PENDING}
    assert {rows[cmid].attempts for cmid in clinic} == {0}
    requests = outbox.sandbox.request_count
    outbox.clock.advance(dispatcher.settings.refused_key_retry.total_seconds() + 1)
    dispatcher.dispatch_once()  # the clinic's key, tried again with one message
    assert outbox.sandbox.request_count == requests + 1
    assert {outbox.row(cmid).status for cmid in clinic} == {Status.PENDING}


def test_a_refused_default_key_holds_back_no_tenant_with_a_key_of_its_own(outbox: Outbox) -> None:
    outbox.sandbox.service.set_api_key(list(KEYS.values()))  # WIRAYA_API_KEY's is refused
    others = enqueue(outbox, "", 2, 300)
    dispatcher = outbox.dispatcher(WIRAYA_API_KEYS=listed(KEYS), WIRAYA_API_KEY=DEFAULT_KEY)
    dispatcher.dispatch_once()  # the default tenant's batch is refused
    clinic = enqueue(outbox, "clinic", 3, 100)

    assert dispatcher.due_batches(outbox.clock.now) >= 1  # beat still starts dispatches
    outbox.drain(dispatcher)

    rows = outbox.rows()
    assert {rows[cmid].status for cmid in clinic} == {Status.ACCEPTED}
    assert {(rows[cmid].status, rows[cmid].attempts) for cmid in others} == {(Status.PENDING, 0)}
