"""A seeded scheduler: actors (workers, beat, producer, operator) take turns, one at a time.

Each actor runs in a greenlet and hands the baton back at every statement and every API call
(``pause``) and whenever it waits (``sleep``, ``block``). The scheduler picks the next actor
that can run with the run's own random generator, so a seed replays the same interleaving.
Dispatch statements run in autocommit, so no actor holds a lock while another runs: a turn
taken at any statement cannot deadlock. Time moves only when no actor can run, to the earliest
wake-up. A crash is a ``Crash`` thrown into an actor where it paused: its memory is gone, its
claimed rows stay until their lease ends.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import greenlet

from tests.simulation.clock import SimClock

TRACE_KEPT = 400


class Crash(BaseException):
    """Thrown into an actor at one of its pauses: the process dies between two statements."""


@dataclass
class Actor:
    """One simulated process: its greenlet, when it can run next (None: blocked)."""

    name: str
    body: Callable[[], None]
    crashable: bool = False
    quiet: int = 0  # > 0: runs its statements without handing the baton (operators, checks)
    wake_at: float | None = 0.0
    glet: greenlet.greenlet | None = None
    done: bool = False


@dataclass
class Scheduler:
    """Chooses who runs next, moves true time, throws crashes; keeps the trace's tail."""

    rng: random.Random
    clock: SimClock
    crash_chance: Callable[[float], float] = lambda elapsed: 0.0
    actors: list[Actor] = field(default_factory=list)
    current: Actor | None = None
    trace: deque[tuple[float, str, str]] = field(default_factory=lambda: deque(maxlen=TRACE_KEPT))
    turns: int = 0

    def spawn(self, name: str, body: Callable[[], None], *, crashable: bool = False) -> Actor:
        actor = Actor(name, body, crashable)
        self.actors.append(actor)
        return actor

    def note(self, text: str) -> None:
        who = self.current.name if self.current else "-"
        self.trace.append((self.clock.elapsed, who, text))

    def lines(self) -> list[str]:
        """The trace's tail as text: time, actor, what it did."""
        return [f"{at:9.3f} {who:<8} {' '.join(text.split())[:70]}" for at, who, text in self.trace]

    # -- inside an actor ----------------------------------------------------------------

    def pause(self, label: str) -> None:
        """A point where another actor may run first (before a statement, an API call)."""
        actor = self.current
        if actor is None or actor.quiet:
            return
        self.trace.append((self.clock.elapsed, actor.name, label))
        actor.wake_at = self.clock.elapsed
        self._to_scheduler()

    def sleep(self, seconds: float) -> None:
        actor = self.current
        if actor is None:
            raise RuntimeError("sleep outside an actor")
        actor.wake_at = self.clock.elapsed + max(0.0, seconds)
        self._to_scheduler()

    def block(self) -> None:
        """Wait until another actor wakes this one (``wake``)."""
        actor = self.current
        if actor is None:
            raise RuntimeError("block outside an actor")
        actor.wake_at = None
        self._to_scheduler()

    def wake(self, actor: Actor) -> None:
        """Let a blocked actor run again."""
        if actor.wake_at is None:
            actor.wake_at = self.clock.elapsed

    def interrupt(self, actor: Actor) -> None:
        """End an actor's sleep now (an insert's notification waking beat)."""
        if actor.wake_at is not None and actor.wake_at > self.clock.elapsed:
            actor.wake_at = self.clock.elapsed

    def _to_scheduler(self) -> None:
        main = greenlet.getcurrent().parent
        assert main is not None
        main.switch()

    # -- the loop -------------------------------------------------------------------------

    def run(self, *, until: float, finished: Callable[[], bool]) -> None:
        """Run turns until ``finished()`` or true time would pass ``until``."""
        while not finished():
            ready = [a for a in self.actors if not a.done and a.wake_at is not None]
            now = [a for a in ready if a.wake_at is not None and a.wake_at <= self.clock.elapsed]
            if not now:
                wakes = [a.wake_at for a in ready if a.wake_at is not None]
                if not wakes or min(wakes) > until:
                    return
                self.clock.advance_to(min(wakes))
                continue
            self._turn(self.rng.choice(now))

    def _turn(self, actor: Actor) -> None:
        self.turns += 1
        self.current = actor
        try:
            if actor.glet is None:
                actor.glet = greenlet.greenlet(actor.body)
                actor.glet.switch()
            elif actor.crashable and self.rng.random() < self.crash_chance(self.clock.elapsed):
                self.note("CRASH")
                actor.glet.throw(Crash())
            else:
                actor.glet.switch()
        finally:
            self.current = None
        if actor.glet is not None and actor.glet.dead:
            actor.done = True

    def close(self) -> None:
        """End every actor still parked (their greenlets unwind their with-blocks)."""
        for actor in self.actors:
            if actor.glet is not None and not actor.glet.dead:
                self.current = actor
                actor.quiet += 1
                try:
                    actor.glet.throw(greenlet.GreenletExit())
                finally:
                    self.current = None
