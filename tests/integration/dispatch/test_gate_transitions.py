"""The gate's transitions on their own, on PostgreSQL and SQLite: each guard refuses a stale write.

Time is passed in: "started" is when a worker's request started, "now" when its answer came.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Connection, Engine

from worker.api_keys import key_fingerprint
from worker.dispatch import gate as gates
from worker.dispatch.gate import accounts
from worker.dispatch.gate import batch_transitions as bt
from worker.dispatch.gate import transitions as t
from worker.dispatch.gate.policy import Gate
from worker.settings import Settings

NOW = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)
SECOND = timedelta(seconds=1)


@pytest.fixture
def connection(engine: Engine) -> Connection:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        gates.read_gate(connection)  # creates the row
        yield connection  # type: ignore[misc]


def view(connection: Connection, fingerprint: str = "") -> gates.GateView:
    return gates.read(connection, fingerprint)


def refuse(
    connection: Connection,
    *,
    fingerprint: str = "k",
    status: int = 401,
    reason: str = "Unauthorized: HTTP 401",
    started: datetime = NOW,
    now: datetime = NOW,
    probe_at: datetime = NOW + 10 * SECOND,
) -> bool:
    """The API refused ``fingerprint``'s key: one refusal transition."""
    return t.refuse_key_unless_cleared_since(
        connection,
        fingerprint=fingerprint,
        status=status,
        reason=reason,
        started=started,
        now=now,
        probe_at=probe_at,
    )


def gate_of(**environ: str) -> Gate:
    """A worker's gate for key "k" with these settings."""
    return Gate(Settings.from_environ({"WIRAYA_API_KEY": "k", **environ}), "k", random.Random(0))


def fail(connection: Connection, *, started: datetime, now: datetime, pause: timedelta) -> bool:
    return t.count_failure_unless_answered_since(
        connection,
        started=started,
        now=now,
        reason=f"failure at {now:%S}",
        pause_until=now + pause,
        threshold=3,
        probe_at=now + 10 * SECOND,
    )


def test_a_new_gate_is_open(connection: Connection) -> None:
    state = view(connection)
    assert (state.version, state.failures, state.paused_until, state.reason) == (0, 0, None, None)
    assert (state.rate, state.batch_limit, state.key_refused, state.refused_key_count) == (
        None,
        None,
        False,
        0,
    )
    assert not state.paused(NOW) and not state.circuit_open(1)


def test_a_failure_counts_pauses_and_never_shortens_a_pause(connection: Connection) -> None:
    assert fail(connection, started=NOW, now=NOW + SECOND, pause=60 * SECOND)
    assert fail(connection, started=NOW, now=NOW + 2 * SECOND, pause=5 * SECOND)
    state = view(connection)
    assert (state.failures, state.version) == (2, 2)
    assert state.paused_until == NOW + 61 * SECOND  # the longer pause holds
    assert state.reason == f"failure at {NOW + 2 * SECOND:%S}"


def test_a_failure_is_not_counted_when_the_api_answered_since_its_request_started(
    connection: Connection,
) -> None:
    t.note_answered(connection, now=NOW + SECOND)
    # Started before that answer: the API answers others, so this is a message's doing.
    assert not fail(connection, started=NOW, now=NOW + 2 * SECOND, pause=5 * SECOND)
    assert view(connection).failures == 0
    # Started after it: nobody was answered since, it counts.
    assert fail(connection, started=NOW + 2 * SECOND, now=NOW + 3 * SECOND, pause=5 * SECOND)
    assert view(connection).failures == 1


def test_a_success_never_erases_a_pause_set_after_its_request_started(
    connection: Connection,
) -> None:
    assert fail(connection, started=NOW, now=NOW + 2 * SECOND, pause=30 * SECOND)
    # A request that started before that failure was noted, answered after it: stale news.
    assert not t.close_circuit_unless_failed_since(
        connection, started=NOW + SECOND, now=NOW + 3 * SECOND
    )
    assert view(connection).paused_until == NOW + 32 * SECOND
    # One that started after the failure closes the circuit and ends the pause.
    assert t.close_circuit_unless_failed_since(
        connection, started=NOW + 3 * SECOND, now=NOW + 4 * SECOND
    )
    state = view(connection)
    assert (state.failures, state.paused_until, state.reason) == (0, None, None)


def test_a_429_pauses_everyone_and_is_news_a_success_cannot_undo(connection: Connection) -> None:
    t.note_rate_limited(
        connection, now=NOW + SECOND, reason="RateLimited: HTTP 429", pause_until=NOW + 6 * SECOND
    )
    state = view(connection)
    assert (state.paused_until, state.failures) == (NOW + 6 * SECOND, 0)  # not the circuit's
    assert not t.close_circuit_unless_failed_since(connection, started=NOW, now=NOW + 2 * SECOND)
    assert view(connection).paused_until == NOW + 6 * SECOND


def test_one_probe_at_a_time_on_its_own_cadence(connection: Connection) -> None:
    for second in range(3):
        fail(connection, started=NOW, now=NOW + second * SECOND, pause=SECOND)
    state = view(connection)
    assert state.circuit_open(3) and state.next_probe_at == NOW + 12 * SECOND

    def take(now: datetime) -> bool:
        return t.take_probe_if_free(connection, now=now, until=now + 5 * SECOND, threshold=3)

    assert not take(NOW + 11 * SECOND)  # the cadence says not yet
    assert take(NOW + 12 * SECOND)
    assert not take(NOW + 13 * SECOND)  # one probe in flight
    assert take(NOW + 17 * SECOND)  # its lease ended (its worker died): another may probe
    t.release_probe_if_mine(connection, until=NOW + 22 * SECOND)
    assert take(NOW + 18 * SECOND)
    assert not t.take_probe_if_free(connection, now=NOW, until=NOW, threshold=4)  # not open


def test_a_probe_that_drew_no_answer_keeps_the_cadence_and_another_may_not_move_it(
    connection: Connection,
) -> None:
    for second in range(3):
        fail(connection, started=NOW, now=NOW + second * SECOND, pause=SECOND)
    until = NOW + 18 * SECOND
    assert t.take_probe_if_free(connection, now=NOW + 12 * SECOND, until=until, threshold=3)
    later = NOW + 23 * SECOND  # its request failed at 13 s: the next probe a probe interval on
    t.release_probe_if_mine(connection, until=NOW + 99 * SECOND, next_probe=later)  # not its
    assert view(connection).probe_until == until and view(connection).next_probe_at < later
    t.release_probe_if_mine(connection, until=until, next_probe=later)
    assert view(connection).probe_until is None and view(connection).next_probe_at == later
    again = NOW + 29 * SECOND
    assert t.take_probe_if_free(connection, now=later, until=again, threshold=3)
    t.release_probe_if_mine(connection, until=again, next_probe=NOW)  # never brought forward
    assert view(connection).probe_until is None and view(connection).next_probe_at == later


def test_a_lapsed_probes_late_failure_leaves_the_next_probes_lease(connection: Connection) -> None:
    for second in range(3):
        fail(connection, started=NOW, now=NOW + second * SECOND, pause=SECOND)
    first, second = NOW + 18 * SECOND, NOW + 25 * SECOND
    assert t.take_probe_if_free(connection, now=NOW + 12 * SECOND, until=first, threshold=3)
    assert t.take_probe_if_free(connection, now=first, until=second, threshold=3)  # it lapsed
    late = NOW + 19 * SECOND  # the first probe's request fails after its lease ended
    assert t.count_failure_unless_answered_since(
        connection,
        started=NOW + 12 * SECOND,
        now=late,
        reason="timed out",
        pause_until=late + SECOND,
        threshold=3,
        probe_at=late + 10 * SECOND,
        probe_until=first,
    )
    assert view(connection).probe_until == second  # still one probe in flight: the second's


def test_slots_are_booked_only_from_the_cursor_read(connection: Connection) -> None:
    def book(read: datetime | None, booked: datetime, rate: float | None = None) -> bool:
        return t.book_slot_if_unchanged(
            connection, read_next_send_at=read, read_rate=rate, booked_next=booked
        )

    assert book(None, NOW + SECOND)
    # A worker that read the cursor before that booking is refused, reads again, books after.
    assert not book(None, NOW + SECOND)
    cursor, rate = t.read_slot_cursor(connection)
    assert (cursor, rate) == (NOW + SECOND, None)
    assert book(cursor, cursor + SECOND)
    assert view(connection).next_send_at == NOW + 2 * SECOND
    # A rate changed since the worker read it (the spacing was the old rate's) refuses it too.
    accounts.change_rate_if_unchanged(connection, read_rate=None, rate=0.5, ceiling=None, now=NOW)
    assert not book(NOW + 2 * SECOND, NOW + 3 * SECOND)
    assert book(NOW + 2 * SECOND, NOW + 4 * SECOND, rate=0.5)


def test_a_429_lowers_the_rate_and_moves_the_cursor_only_from_the_values_read(
    connection: Connection,
) -> None:
    accounts.change_rate_if_unchanged(connection, read_rate=None, rate=1.0, ceiling=None, now=NOW)

    def lower(read_rate: float | None, read: datetime | None, moved: datetime) -> bool:
        return accounts.lower_rate_if_unchanged(
            connection,
            read_rate=read_rate,
            read_next_send_at=read,
            rate=0.5,
            ceiling=1.0,
            next_send_at=moved,
            now=NOW,
        )

    assert not lower(None, None, NOW + 2 * SECOND)  # the rate moved since it was read
    t.book_slot_if_unchanged(
        connection, read_next_send_at=None, read_rate=1.0, booked_next=NOW + SECOND
    )
    assert not lower(1.0, None, NOW + 2 * SECOND)  # a slot was booked since
    assert lower(1.0, NOW + SECOND, NOW + 2 * SECOND)
    state = view(connection)
    assert (state.rate, state.rate_ceiling, state.next_send_at) == (0.5, 1.0, NOW + 2 * SECOND)


def test_the_rate_moves_only_from_the_value_read(connection: Connection) -> None:
    assert accounts.change_rate_if_unchanged(
        connection, read_rate=None, rate=1.0, ceiling=None, now=NOW
    )
    assert (
        not accounts.change_rate_if_unchanged(  # a second 429 of the same moment does not compound
            connection, read_rate=None, rate=1.0, ceiling=None, now=NOW
        )
    )
    assert accounts.change_rate_if_unchanged(
        connection, read_rate=1.0, rate=0.7, ceiling=1.0, now=NOW
    )
    state = view(connection)
    assert (state.rate, state.rate_ceiling) == (0.7, 1.0)


def test_a_refused_key_stops_that_key_only(connection: Connection) -> None:
    assert refuse(connection, fingerprint="old", now=NOW + SECOND, probe_at=NOW + 11 * SECOND)
    old, new = view(connection, "old"), view(connection, "new")
    assert old.key_refused and old.key_next_probe_at == NOW + 11 * SECOND
    assert not new.key_refused and new.refused_key_count == 1
    assert (new.paused_until, new.failures) == (None, 0)  # no brake of the others moved

    # A request with the old key that started before the refusal cannot clear it...
    assert not t.clear_key_unless_refused_since(
        connection, fingerprint="old", started=NOW, now=NOW + 2 * SECOND
    )
    # ...one that started after it can, and then a stale 401 cannot refuse the key again.
    assert t.clear_key_unless_refused_since(
        connection, fingerprint="old", started=NOW + 2 * SECOND, now=NOW + 3 * SECOND
    )
    assert not refuse(
        connection,
        fingerprint="old",
        reason="stale",
        started=NOW + SECOND,
        now=NOW + 4 * SECOND,
        probe_at=NOW + 14 * SECOND,
    )
    assert not view(connection, "old").key_refused


def test_one_key_probe_at_a_time(connection: Connection) -> None:
    refuse(connection, status=403, reason="Unauthorized: HTTP 403")

    def take(now: datetime) -> bool:
        return t.take_key_probe_if_free(
            connection, fingerprint="k", now=now, until=now + 5 * SECOND
        )

    assert not take(NOW + 9 * SECOND)
    assert take(NOW + 10 * SECOND)
    assert not take(NOW + 11 * SECOND)
    t.release_key_probe_if_mine(
        connection, fingerprint="k", until=NOW + 15 * SECOND, next_probe=NOW + 21 * SECOND
    )
    assert not take(NOW + 20 * SECOND)
    assert take(NOW + 21 * SECOND)


def test_the_batch_limit_never_falls_below_what_the_api_answered(connection: Connection) -> None:
    bt.limit_batch_size_to_proven(connection, size=100, now=NOW)
    assert view(connection).batch_limit == 50
    bt.prove_batch_size(connection, size=40)
    bt.prove_batch_size(connection, size=30)  # smaller than proven: changes nothing
    assert view(connection).batch_proven == 40
    bt.limit_batch_size_to_proven(connection, size=50, now=NOW)  # one huge message in 50
    assert view(connection).batch_limit == 40
    bt.limit_batch_size_to_proven(connection, size=2, now=NOW)
    assert view(connection).batch_limit == 40


def test_a_size_refused_for_its_size_brings_limit_and_proven_down_only(
    connection: Connection,
) -> None:
    bt.prove_batch_size(connection, size=32)
    assert bt.lower_batch_size_to(connection, size=8, now=NOW)
    assert bt.lower_batch_size_to(connection, size=4, now=NOW)  # two workers' notes commute:
    assert not bt.lower_batch_size_to(connection, size=8, now=NOW)  # the lower one stays
    assert (view(connection).batch_limit, view(connection).batch_proven) == (4, 4)


def test_the_batch_limit_creeps_up_only_from_the_value_read(connection: Connection) -> None:
    bt.prove_batch_size(connection, size=32)
    bt.lower_batch_size_to(connection, size=8, now=NOW)
    bt.lower_batch_size_to(connection, size=4, now=NOW)  # another worker's note meanwhile
    assert not bt.raise_batch_limit_if_unchanged(connection, read_limit=8, limit=16, now=NOW)
    assert view(connection).batch_limit == 4
    assert bt.raise_batch_limit_if_unchanged(connection, read_limit=4, limit=None, now=NOW)
    assert view(connection).batch_limit is None


def test_reset_clears_every_brake_and_stale_failures_cannot_undo_it(
    connection: Connection,
) -> None:
    for second in range(3):
        fail(connection, started=NOW, now=NOW + second * SECOND, pause=60 * SECOND)
    refuse(connection, reason="x")
    accounts.change_rate_if_unchanged(connection, read_rate=None, rate=0.5, ceiling=1.0, now=NOW)
    bt.prove_batch_size(connection, size=8)
    bt.limit_batch_size_to_proven(connection, size=10, now=NOW)
    t.reset(connection, now=NOW + 5 * SECOND)
    state = view(connection, "k")
    assert (state.failures, state.paused_until, state.probe_until, state.next_probe_at) == (
        0,
        None,
        None,
        None,
    )
    assert (state.rate, state.batch_limit, state.key_refused) == (None, None, False)
    assert state.batch_proven is None  # a size the API took once may be too large now
    # A request in flight during the resume fails after it: it started before, it is refused.
    assert not fail(connection, started=NOW + 4 * SECOND, now=NOW + 6 * SECOND, pause=SECOND)
    assert view(connection).failures == 0


def test_a_view_older_than_a_key_clear_is_not_held_back_by_it(connection: Connection) -> None:
    """Another worker's probe cleared the key after this worker read it: this worker sends."""
    refuse(connection)
    gate = gate_of()
    stale = gate.read(connection)
    assert stale.key_refused
    assert t.take_key_probe_if_free(
        connection, fingerprint="k", now=NOW + 10 * SECOND, until=NOW + 15 * SECOND
    )
    assert t.clear_key_unless_refused_since(
        connection, fingerprint="k", started=NOW + 10 * SECOND, now=NOW + 11 * SECOND
    )

    permit = gate.permit(connection, stale, NOW + 12 * SECOND)

    assert permit.allowed and permit.probe is None and permit.reason is None


def test_a_429_brings_the_rate_down_though_another_answer_raised_it_meanwhile(
    connection: Connection,
) -> None:
    """Two workers read rate 1.0; one's answer grows it, then the other's request draws a 429."""
    accounts.change_rate_if_unchanged(connection, read_rate=None, rate=1.0, ceiling=2.0, now=NOW)
    gate = gate_of()
    first, second = (gate.permit(connection, gate.read(connection), NOW) for _ in range(2))

    gate.answered(connection, first, started=NOW, size=1, now=NOW + SECOND)
    assert view(connection).rate == pytest.approx(1.05)
    gate.rate_limited(
        connection, second, retry_after=5 * SECOND, reason="429", now=NOW + 2 * SECOND
    )

    state = view(connection)
    assert state.rate == pytest.approx(0.7)  # from the rate that drew it, not left at 1.05
    assert state.rate_ceiling == pytest.approx(1.0)


def test_429s_of_one_moment_do_not_compound_and_never_raise_the_rate(
    connection: Connection,
) -> None:
    accounts.change_rate_if_unchanged(connection, read_rate=None, rate=1.0, ceiling=None, now=NOW)
    gate = gate_of()
    permits = [gate.permit(connection, gate.read(connection), NOW) for _ in range(2)]
    for permit in permits:
        gate.rate_limited(connection, permit, retry_after=SECOND, reason="429", now=NOW)
    assert view(connection).rate == pytest.approx(0.7)

    accounts.change_rate_if_unchanged(connection, read_rate=0.7, rate=0.5, ceiling=0.7, now=NOW)
    gate.rate_limited(connection, permits[0], retry_after=SECOND, reason="429", now=NOW)
    assert view(connection).rate == pytest.approx(0.5)  # a lower rate set since stays


def test_a_429_brings_the_rate_in_force_down_when_the_learnt_rate_grew_past_the_configured(
    connection: Connection,
) -> None:
    """OUTBOX_RATE_LIMIT=2 is in force; answers grew the learnt rate to 5 above it: a 429 was
    drawn at 2 requests/s, so the rate comes down from 2, not from 5 (which leaves 2 in force)."""
    accounts.change_rate_if_unchanged(connection, read_rate=None, rate=5.0, ceiling=None, now=NOW)
    gate = gate_of(OUTBOX_RATE_LIMIT="2")
    permit = gate.permit(connection, gate.read(connection), NOW)

    gate.rate_limited(connection, permit, retry_after=SECOND, reason="429", now=NOW)

    state = view(connection)
    assert gate.pacing.rate(state) == pytest.approx(1.4)
    assert state.rate_ceiling == pytest.approx(2.0)


def test_a_429_spaces_the_slot_after_one_booked_before_it_by_the_lowered_rate(
    connection: Connection,
) -> None:
    """Simulator seed 7064: a worker booked a slot at 1 request/s and waits for it; another's
    429 brings the rate down to 0.7 meanwhile. The booked slot keeps its time, but the next
    request follows it by the lowered rate's spacing, not by the spacing it was booked at."""
    accounts.change_rate_if_unchanged(connection, read_rate=None, rate=1.0, ceiling=None, now=NOW)
    gate = gate_of()
    waiting = gate.permit(connection, gate.read(connection), NOW)
    assert gate.pacing.book_slot(connection, waiting.view, NOW) == timedelta(0)

    other = gate.permit(connection, gate.read(connection), NOW)
    gate.rate_limited(connection, other, retry_after=None, reason="429", now=NOW)

    later = NOW + 1.2 * SECOND  # past the booked spacing (1 s), within the lowered one (1.43 s)
    wait = gate.pacing.book_slot(connection, gate.read(connection), later)
    assert wait is not None
    assert later + wait >= NOW + timedelta(seconds=1 / 0.7)


def test_a_slot_booked_on_a_view_older_than_a_429_is_spaced_by_the_lowered_rate(
    connection: Connection,
) -> None:
    """A worker read the gate at 1 request/s; a 429 brings the rate down before it books: its
    booking is refused and made again at the lowered rate, not spaced by the rate it read."""
    accounts.change_rate_if_unchanged(connection, read_rate=None, rate=1.0, ceiling=None, now=NOW)
    gate = gate_of()
    stale = gate.read(connection)
    other = gate.permit(connection, gate.read(connection), NOW)
    gate.rate_limited(connection, other, retry_after=None, reason="429", now=NOW)

    assert gate.pacing.book_slot(connection, stale, NOW) == timedelta(0)

    assert view(connection).next_send_at == NOW + timedelta(seconds=1 / 0.7)


def test_a_429_under_a_tenants_own_key_moves_that_keys_cursor_not_the_gate_rows(
    connection: Connection,
) -> None:
    """Wiraya limits each account: a tenant's own key has its own rate and cursor. A slot booked
    under it at 1 request/s is followed, after that key's 429, at its lowered rate; the gate row
    (WIRAYA_API_KEY's), booked at its own rate, keeps its cursor and its rate."""
    gate = gate_of()
    gate.read(connection, "tenant-key")  # creates the key's own row
    accounts.change_rate_if_unchanged(
        connection, read_rate=None, rate=1.0, ceiling=None, now=NOW, account="tenant-key"
    )
    accounts.change_rate_if_unchanged(connection, read_rate=None, rate=1.0, ceiling=None, now=NOW)
    assert gate.pacing.book_slot(connection, gate.read(connection), NOW) == timedelta(0)
    mine = gate.read(connection, "tenant-key")
    assert gate.pacing.book_slot(connection, mine, NOW) == timedelta(0)

    limited = gate.permit(connection, gate.read(connection, "tenant-key"), NOW)
    gate.rate_limited(connection, limited, retry_after=None, reason="429", now=NOW)

    key = gate.read(connection, "tenant-key")
    assert (key.rate, key.rate_ceiling) == (pytest.approx(0.7), 1.0)
    assert key.next_send_at == NOW + timedelta(seconds=1 / 0.7)
    everyone = view(connection)
    assert (everyone.rate, everyone.next_send_at) == (1.0, NOW + SECOND)
    # A booking read under the key before its 429 is refused, and made at the lowered rate.
    assert gate.pacing.book_slot(connection, mine, NOW) == timedelta(seconds=1 / 0.7)


def test_a_429_under_a_tenants_own_key_widens_from_its_own_configured_rate(
    connection: Connection,
) -> None:
    """The tenant's key is configured at 2 requests/s (OUTBOX_RATE_LIMITS) and has learnt no
    rate: its slot was booked 0.5 s on, and its 429 moves the key's cursor to 1 / 1.4 s on (the
    rate in force was the key's configured one, not OUTBOX_RATE_LIMIT, which is unset)."""
    gate = gate_of(WIRAYA_API_KEYS="clinic=clinic-key", OUTBOX_RATE_LIMITS="clinic=2")
    key = key_fingerprint("clinic-key", gate.settings.fingerprint_salt)
    assert gate.pacing.book_slot(connection, gate.read(connection, key), NOW) == timedelta(0)

    limited = gate.permit(connection, gate.read(connection, key), NOW)
    gate.rate_limited(connection, limited, retry_after=None, reason="429", now=NOW)

    state = gate.read(connection, key)
    assert (state.rate, state.rate_ceiling) == (pytest.approx(1.4), 2.0)
    assert state.next_send_at == NOW + timedelta(seconds=1 / 1.4)
    assert view(connection).next_send_at is None  # WIRAYA_API_KEY's slots: none booked
