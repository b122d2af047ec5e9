"""The outbox's time: the database's clock as last read, advanced by the monotonic clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from worker.clock import DatabaseClock

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class Database:
    """A database clock that a test moves, counting how often it is read."""

    def __init__(self) -> None:
        self.now, self.reads = T0, 0

    def __call__(self) -> datetime:
        self.reads += 1
        return self.now


class Monotonic:
    def __init__(self) -> None:
        self.seconds = 100.0

    def __call__(self) -> float:
        return self.seconds


def test_between_reads_the_database_time_advances_by_the_monotonic_clock() -> None:
    database, monotonic = Database(), Monotonic()
    clock = DatabaseClock(database, monotonic=monotonic, refresh=timedelta(seconds=5))

    assert clock() == T0 and database.reads == 1
    monotonic.seconds += 4.5
    database.now = T0 - timedelta(minutes=10)  # not read yet: a step is followed at the refresh
    assert clock() == T0 + timedelta(seconds=4.5) and database.reads == 1


def test_the_database_time_is_read_again_every_refresh_interval() -> None:
    database, monotonic = Database(), Monotonic()
    clock = DatabaseClock(database, monotonic=monotonic, refresh=timedelta(seconds=5))
    clock()
    monotonic.seconds += 5
    database.now = T0 + timedelta(seconds=7)

    assert clock() == T0 + timedelta(seconds=7) and database.reads == 2
    monotonic.seconds += 1
    assert clock() == T0 + timedelta(seconds=8) and database.reads == 2


def test_a_monotonic_clock_that_went_back_reads_the_database_again() -> None:
    database, monotonic = Database(), Monotonic()
    clock = DatabaseClock(database, monotonic=monotonic)
    clock()
    monotonic.seconds -= 1  # another process's clock injected by mistake, or a simulator's reset

    assert clock() == T0 and database.reads == 2
