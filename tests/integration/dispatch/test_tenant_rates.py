"""Wiraya's rate limit is per account: each tenant's key has its own 429 pause (Retry-After
honoured per key), its own learnt request rate and its own configured one (OUTBOX_RATE_LIMITS),
while the circuit stays shared (design.md 5a, the invariants per key; both databases). The
sandbox keeps a token bucket per key, as Wiraya does."""

from __future__ import annotations

from datetime import timedelta

import pytest

from models import Status
from tests.integration.dispatch.harness import Outbox
from tests.integration.dispatch.test_tenant_keys import DEFAULT_KEY, KEYS, enqueue, listed
from worker.dispatch.dispatcher import Dispatcher
from worker.dispatch.gate import GateView, accounts
from worker.dispatch.retry import INITIAL_RATE
from worker.ops import changes

RETRY_AFTER = timedelta(seconds=30)


def tenants_dispatcher(outbox: Outbox, **overrides: object) -> Dispatcher:
    outbox.sandbox.service.set_api_key([*KEYS.values(), DEFAULT_KEY])
    return outbox.dispatcher(
        WIRAYA_API_KEYS=listed(KEYS), WIRAYA_API_KEY=DEFAULT_KEY, OUTBOX_BATCH_SIZE=2, **overrides
    )


def key_view(outbox: Outbox, dispatcher: Dispatcher, tenant: str) -> GateView:
    """The gate as a worker reads it for ``tenant``'s key."""
    with outbox.engine.begin() as connection:
        return dispatcher.gate.read(connection, dispatcher.senders.fingerprint(tenant))


def statuses(outbox: Outbox, ids: list[str]) -> set[tuple[Status, int]]:
    rows = outbox.rows()
    return {(rows[cmid].status, rows[cmid].attempts) for cmid in ids}


def test_a_429_under_one_tenants_key_pauses_that_tenant_only(outbox: Outbox) -> None:
    # One request's worth of tokens per key, then 429 with Retry-After: 30.
    outbox.sandbox.set_faults(rate_limit=0.001, retry_after=RETRY_AFTER)
    dispatcher = tenants_dispatcher(outbox)
    clinic = enqueue(outbox, "clinic", 4, 100)
    assert dispatcher.dispatch_once().accepted == 2
    limited_at = outbox.clock.now
    limited = dispatcher.dispatch_once()  # the clinic's second request draws the 429
    assert (limited.state, limited.released) == ("alarm", 2)
    shop = enqueue(outbox, "shop", 2, 200)

    outbox.drain(dispatcher)

    assert statuses(outbox, shop) == {(Status.ACCEPTED, 1)}  # the shop's key has its own tokens
    assert statuses(outbox, clinic) == {(Status.PENDING, 0), (Status.ACCEPTED, 1)}
    clinic_view, shop_view = (key_view(outbox, dispatcher, t) for t in ("clinic", "shop"))
    assert clinic_view.paused_until is not None
    assert clinic_view.paused_until >= limited_at + RETRY_AFTER  # Retry-After is a floor
    assert clinic_view.rate == INITIAL_RATE  # the clinic's key learns a rate of its own
    assert not shop_view.paused(outbox.clock.now) and shop_view.rate is None
    everyone = outbox.gate()  # WIRAYA_API_KEY's and the circuit: untouched
    assert (everyone.paused_until, everyone.failures, everyone.rate) == (None, 0, None)
    assert outbox.sandbox.status_count(429) == 1  # nothing more was sent under the paused key

    outbox.sandbox.set_faults(rate_limit=None)
    outbox.clock.move_to(clinic_view.paused_until)
    outbox.drain(dispatcher)
    assert statuses(outbox, clinic) == {(Status.ACCEPTED, 1)}


def test_a_429_under_the_default_key_pauses_no_tenant_with_a_key_of_its_own(
    outbox: Outbox,
) -> None:
    outbox.sandbox.set_faults(rate_limit=0.001, retry_after=RETRY_AFTER)
    dispatcher = tenants_dispatcher(outbox)
    others = enqueue(outbox, "", 4, 300)
    dispatcher.dispatch_once()
    assert dispatcher.dispatch_once().state == "alarm"  # WIRAYA_API_KEY's 429
    clinic = enqueue(outbox, "clinic", 2, 100)

    assert dispatcher.due_batches(outbox.clock.now) >= 1  # beat still starts dispatches
    outbox.drain(dispatcher)

    assert statuses(outbox, clinic) == {(Status.ACCEPTED, 1)}
    assert statuses(outbox, others) == {(Status.PENDING, 0), (Status.ACCEPTED, 1)}
    assert outbox.gate().paused(outbox.clock.now)  # the default key's pause, as ever
    assert not key_view(outbox, dispatcher, "clinic").paused(outbox.clock.now)


def test_each_tenants_key_keeps_to_its_own_configured_rate(outbox: Outbox) -> None:
    dispatcher = tenants_dispatcher(outbox, OUTBOX_RATE_LIMITS="clinic=0.5,shop=2")
    clinic = enqueue(outbox, "clinic", 4, 100)
    shop = enqueue(outbox, "shop", 4, 200)

    summaries = [dispatcher.dispatch_once() for _ in range(4)]  # the clock stands still

    assert sum(summary.accepted for summary in summaries) == 8
    assert statuses(outbox, clinic + shop) == {(Status.ACCEPTED, 1)}
    # Each key's second request waited its own spacing: 1 / 0.5 s and 1 / 2 s, not the other's.
    assert sorted(outbox.sleeps) == [pytest.approx(0.5), pytest.approx(2.0)]


def test_a_configured_rate_of_one_tenant_leaves_the_others_unpaced(outbox: Outbox) -> None:
    dispatcher = tenants_dispatcher(outbox, OUTBOX_RATE_LIMITS="clinic=0.5")
    enqueue(outbox, "clinic", 2, 100)
    enqueue(outbox, "shop", 6, 200)
    enqueue(outbox, "", 6, 300)

    outbox.drain(dispatcher)

    assert {row.status for row in outbox.rows().values()} == {Status.ACCEPTED}
    assert outbox.sleeps == []  # the clinic's one request took its first slot; no one else waits


def test_each_key_learns_its_own_rate_back_up(outbox: Outbox) -> None:
    outbox.sandbox.set_faults(rate_limit=0.001, retry_after=timedelta(seconds=1))
    dispatcher = tenants_dispatcher(outbox)
    enqueue(outbox, "clinic", 4, 100)
    dispatcher.dispatch_once()
    dispatcher.dispatch_once()  # the clinic's 429: its key learns a rate
    outbox.sandbox.set_faults(rate_limit=None)
    enqueue(outbox, "shop", 4, 200)
    outbox.clock.advance(2)

    outbox.drain(dispatcher)

    clinic_view = key_view(outbox, dispatcher, "clinic")
    assert clinic_view.rate is not None and clinic_view.rate > INITIAL_RATE  # grew per answer
    assert clinic_view.rate_ceiling is None  # the first 429 knew no rate that drew it
    assert key_view(outbox, dispatcher, "shop").rate is None  # the shop's never came down
    assert outbox.gate().rate is None


def test_a_dead_workers_rows_wait_out_their_keys_pause(outbox: Outbox) -> None:
    dispatcher = tenants_dispatcher(outbox)
    clinic = enqueue(outbox, "clinic", 2, 100)
    outbox.claim_and_die(dispatcher)  # the clinic's rows, under a lease no one will record
    key = dispatcher.senders.fingerprint("clinic")
    with outbox.engine.begin() as connection:
        dispatcher.gate.read(connection, key)  # the key's row
        until = outbox.clock.now + timedelta(seconds=120)
        accounts.note_key_rate_limited(
            connection, account=key, now=outbox.clock.now, reason="RateLimited", pause_until=until
        )
    outbox.clock.advance(dispatcher.settings.lease.total_seconds() + 1)  # the lease lapsed

    summary = dispatcher.dispatch_once()  # the lapsed rows come first, under the clinic's key

    assert (summary.state, summary.requests) == ("paused", 0)
    assert outbox.sandbox.request_count == 0
    assert {outbox.row(cmid).status for cmid in clinic} == {Status.PENDING}
    outbox.clock.move_to(until)
    outbox.drain(dispatcher)
    assert {outbox.row(cmid).status for cmid in clinic} == {Status.ACCEPTED}


def test_outbox_resume_clears_every_keys_pause_and_learnt_rate(outbox: Outbox) -> None:
    outbox.sandbox.set_faults(rate_limit=0.001, retry_after=RETRY_AFTER)
    dispatcher = tenants_dispatcher(outbox)
    clinic = enqueue(outbox, "clinic", 4, 100)
    dispatcher.dispatch_once()
    dispatcher.dispatch_once()  # the clinic's 429
    assert key_view(outbox, dispatcher, "clinic").paused(outbox.clock.now)
    outbox.sandbox.set_faults(rate_limit=None)

    changes.resume(outbox.engine, now=outbox.clock.now)

    view = key_view(outbox, dispatcher, "clinic")
    assert not view.paused(outbox.clock.now) and view.rate is None
    outbox.drain(dispatcher)
    assert statuses(outbox, clinic) == {(Status.ACCEPTED, 1)}


@pytest.mark.parametrize("tenant", ["clinic", ""], ids=["a-tenants-key", "the-default-key"])
def test_outbox_resume_keeps_a_configured_rates_spacing(outbox: Outbox, tenant: str) -> None:
    """`outbox resume` forgets learnt rates and pauses, not the next request's slot: a request
    sent just before it is still followed by the next one a configured rate's spacing later
    (simulator seed 200896 sent 0.409 s after the last at OUTBOX_RATE_LIMIT=2)."""
    dispatcher = tenants_dispatcher(outbox, OUTBOX_RATE_LIMIT=2, OUTBOX_RATE_LIMITS="clinic=2")
    dispatcher.sleep = outbox.clock.advance  # a slot wait takes its time
    enqueue(outbox, tenant, 4, 100)  # two batches of two
    sent_at = outbox.clock.now
    assert dispatcher.dispatch_once().accepted == 2

    changes.resume(outbox.engine, now=outbox.clock.now)

    assert dispatcher.dispatch_once().accepted == 2
    assert outbox.clock.now - sent_at >= timedelta(seconds=0.5)


def test_a_slow_tenants_rate_leaves_other_keys_stale_cursors_stale(outbox: Outbox) -> None:
    """A cursor further ahead than any booking under its key leaves it (a clock stepped forward
    wrote it) is no slot to wait for: how far that is depends on the key's own rates, not on the
    slowest rate any tenant has configured."""
    dispatcher = tenants_dispatcher(outbox, OUTBOX_RATE_LIMITS="clinic=0.005")
    default = enqueue(outbox, "", 2, 300)
    stepped = outbox.clock.now + timedelta(seconds=100)  # a learnt 1/s books at most 2 + 20 s on
    outbox.set_gate(rate=1.0, next_send_at=stepped)

    summary = dispatcher.dispatch_once()

    assert (summary.state, summary.accepted) == ("sent", 2)
    assert statuses(outbox, default) == {(Status.ACCEPTED, 1)}
