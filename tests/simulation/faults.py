"""The fault plan: what the API, the hosts and the operators do to one run, drawn from its seed.

A plan is plain data: windows of trouble at the API for every request, messages that fail on
their own (poison), item-limit changes, host clocks stepped, crashes, operator commands and the
messages' arrivals. Once ``fault_end`` has passed the API answers every ordinary request again:
liveness is measured from there.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from enum import StrEnum

from worker.settings import Settings


class ApiFault(StrEnum):
    """What the API does to every request during a window."""

    OUTAGE = "outage"  # 503 from the API
    HTML = "html"  # a proxy's 502 HTML page
    REFUSED = "refused"  # connections refused: no HTTP answer at all
    HANG = "hang"  # no answer until the request's deadline
    UNAUTHORIZED = "401"
    FORBIDDEN = "403"
    RATE_LIMITED = "429"
    SERVER_ERRORS = "500"  # a 500 from the API's own server, which ran the request


# The window kinds random plans draw from. A window of 500s for every request is a named
# scenario's only (server-errors-for-a-minute): drawn at random it fails innocent messages
# sent alone, as a hang of the whole API does (KNOWN_VIOLATIONS' innocent-failed), and adding
# it here would redraw every seed's plan.
RANDOM_WINDOWS = [kind for kind in ApiFault if kind is not ApiFault.SERVER_ERRORS]


class Poison(StrEnum):
    """How a message fails on its own: every request holding it draws this."""

    SERVER_ERROR = "poison-5xx"
    HANG = "poison-hang"
    BAD_REQUEST = "poison-400"
    TOO_LARGE = "poison-413"


class Command(StrEnum):
    RETRY = "retry"
    CANCEL = "cancel"
    PRUNE = "prune"
    RESUME = "resume"


# Fault kinds the default random plan leaves out while a known defect breaks a property they
# exercise (each flips back in when its fix lands: see tests/simulation/test_scenarios.py).
KNOWN_DEFECTS: dict[str, str] = {}


# The simulator's settings: short durations keep runs short; every one is a real setting.
BASE_SETTINGS: dict[str, object] = {
    "WIRAYA_TIMEOUT_SECONDS": 5,
    "OUTBOX_BATCH_SIZE": 4,
    "OUTBOX_BATCH_SIZE_MAX": 8,
    "OUTBOX_BACKOFF_BASE_SECONDS": 1,
    "OUTBOX_BACKOFF_MAX_SECONDS": 20,
    "OUTBOX_LEASE_SECONDS": 20,
    "OUTBOX_MAX_ATTEMPTS": 3,
    "OUTBOX_CIRCUIT_FAILURES": 3,
    "OUTBOX_PROBE_INTERVAL_SECONDS": 5,
    "OUTBOX_POLL_INTERVAL_SECONDS": 5,  # beat also hears every insert
    "OUTBOX_MAX_PARALLEL_DISPATCHES": 3,
}
if "refused_key_retry" in Settings.model_fields:  # a refused key's own cadence, where it has one
    BASE_SETTINGS["OUTBOX_REFUSED_KEY_RETRY_SECONDS"] = 20


@dataclass(frozen=True)
class Window:
    kind: ApiFault
    start: float
    end: float
    retry_after: float | None = None  # 429 only
    key: str | None = None  # only requests under this API key meet it (None: every request)


# Defects of one database only (a fix that holds on the other): left out of its random plans.
KNOWN_DEFECTS_ON: dict[str, dict[str, str]] = {
    "sqlite": {
        # Exempt by design: on SQLite the database's clock is the one host's, so a step back
        # moves every due time of the rows already written into the future, and nothing can
        # tell them from rows scheduled for then
        # (docs/sending-gate.md#no-hosts-clock-is-the-outboxs-clock).
        "clock-step": "on SQLite the outbox's time is the one host's clock: a step is its own",
    },
    "postgresql": {},
}


def known_defects(database: str) -> dict[str, str]:
    """The fault kinds left out of ``database``'s random plans, and why."""
    return {**KNOWN_DEFECTS, **KNOWN_DEFECTS_ON.get(database, {})}


# Violations that random runs may still show while a defect the simulator found stays open:
# `make simulate` reports them, the seeds in `make test` tolerate them (each has a scenario).
KNOWN_VIOLATIONS: dict[str, str] = {
    "innocent-failed": (
        "a hang of the whole API lasting several probe intervals while one message alone is "
        "due: its lone timeouts after the first are held against it (scenario "
        "hang-outage-alone; not judging them instead leaves a hanging message alone for ever)"
    ),
    "lone-sends": (
        "found by the simulator: a hanging message sent alone with no other traffic is first "
        "taken for a hang of the API, so it may be sent alone up to two times more than "
        "OUTBOX_MAX_ATTEMPTS before it ends failed (seeds 20, 285)"
    ),
}


@dataclass(frozen=True)
class ClockStep:
    """From ``at`` on, worker ``worker``'s host clock is ``offset`` seconds off true time."""

    at: float
    worker: int
    offset: float


@dataclass(frozen=True)
class Arrival:
    at: float
    count: int
    priority: int = 1


@dataclass(frozen=True)
class FaultPlan:
    """One run's world: its settings, messages and everything that goes wrong in it."""

    workers: int = 2
    arrivals: tuple[Arrival, ...] = (Arrival(0.0, 12),)
    poison: tuple[tuple[int, Poison], ...] = ()  # message number -> how it fails
    windows: tuple[Window, ...] = ()
    item_limits: tuple[tuple[float, int], ...] = ()  # from time t on, at most n items
    clock_steps: tuple[ClockStep, ...] = ()
    commands: tuple[tuple[float, Command], ...] = ()
    crash_chance: float = 0.0  # per turn of a worker, until fault_end
    fault_end: float = 0.0
    settings: dict[str, object] = field(default_factory=lambda: dict(BASE_SETTINGS))
    # Tenants besides the default one: message n is tenant ("", *tenants)[n % (1 + len)]'s (their
    # keys are the settings' WIRAYA_API_KEYS).
    tenants: tuple[str, ...] = ()
    # API key -> requests per second its account takes before 429s (Wiraya limits each account).
    account_limits: tuple[tuple[str, float], ...] = ()

    def tenant_of(self, number: int) -> str:
        every = ("", *self.tenants)
        return every[number % len(every)]

    def poison_of(self, number: int) -> Poison | None:
        return dict(self.poison).get(number)

    def window_at(self, elapsed: float, key: str | None = None) -> Window | None:
        """The window a request under ``key`` meets at ``elapsed``, if any."""
        for window in self.windows:
            if window.start <= elapsed < window.end and window.key in (None, key):
                return window
        return None

    def calm_at(self, elapsed: float) -> bool:
        """Whether no window of trouble was on within a probe interval before ``elapsed``: a
        lone failure then is the message's own (before, the outbox cannot tell it from the
        outage it just saw, and the message waits unspent:
        docs/sending-gate.md#one-bad-message-holds-nothing-back)."""
        since = elapsed - float(str(self.settings["OUTBOX_PROBE_INTERVAL_SECONDS"]))
        return all(window.end <= since or window.start > elapsed for window in self.windows)

    def item_limit_at(self, elapsed: float) -> int | None:
        limit = None
        for at, items in self.item_limits:
            if at <= elapsed:
                limit = items
        return limit

    def messages(self) -> int:
        return sum(arrival.count for arrival in self.arrivals)

    def kinds(self) -> set[str]:
        """The fault kinds this plan holds (for the summary's per-kind figures)."""
        kinds: set[str] = {window.kind.value for window in self.windows}
        kinds |= {kind.value for _, kind in self.poison}
        if self.item_limits:
            kinds.add("item-limit")
        if self.clock_steps:
            kinds.add("clock-step")
        if self.crash_chance:
            kinds.add("crash")
        kinds |= {f"op-{command.value}" for _, command in self.commands}
        return kinds


def random_plan(seed: int, *, excluded: set[str] | None = None) -> FaultPlan:
    """A plan drawn from ``seed`` alone; kinds in ``excluded`` (default: KNOWN_DEFECTS) left out."""
    rng = random.Random(f"plan-{seed}")
    skip = set(KNOWN_DEFECTS) if excluded is None else excluded
    fault_end = rng.uniform(10, 45)
    arrivals = [Arrival(0.0, rng.randint(3, 9))]
    for _ in range(rng.randint(0, 3)):
        arrivals.append(
            Arrival(rng.uniform(0, fault_end), rng.randint(1, 4), rng.choice((0, 1, 2)))
        )
    arrivals.append(Arrival(fault_end, rng.randint(1, 4)))  # some arrive as the API returns
    total = sum(arrival.count for arrival in arrivals)
    kinds = [kind for kind in Poison if kind not in skip]
    poison = {}
    for _ in range(rng.choice((0, 0, 1, 1, 2))):
        if kinds:
            poison[rng.randrange(total)] = rng.choice(kinds)
    windows = _windows(rng, fault_end, [kind for kind in RANDOM_WINDOWS if kind not in skip])
    item_limits = ()
    if "item-limit" not in skip and rng.random() < 0.3:
        item_limits = ((rng.uniform(0, fault_end), rng.randint(2, 3)),)
    steps: tuple[ClockStep, ...] = ()
    if "clock-step" not in skip and rng.random() < 0.3:
        offset = rng.choice((-600.0, -120.0, 300.0))
        steps = (ClockStep(rng.uniform(0, fault_end), 0, offset),)
    commands = tuple(
        sorted(
            (rng.uniform(0, fault_end), rng.choice(list(Command))) for _ in range(rng.randint(0, 2))
        )
    )
    settings = dict(BASE_SETTINGS)
    if rng.random() < 0.3:
        settings["OUTBOX_RATE_LIMIT"] = rng.choice((2, 5))
    return FaultPlan(
        workers=rng.randint(1, 3),
        arrivals=tuple(sorted(arrivals, key=lambda arrival: arrival.at)),
        poison=tuple(sorted(poison.items())),
        windows=windows,
        item_limits=item_limits,
        clock_steps=steps,
        commands=commands,
        crash_chance=rng.choice((0.0, 0.0, 0.03, 0.08)),
        fault_end=fault_end,
        settings=settings,
    )


def _windows(rng: random.Random, fault_end: float, kinds: list[ApiFault]) -> tuple[Window, ...]:
    """Up to three windows of trouble, one after the other, all ended by ``fault_end``."""
    windows = []
    start = rng.uniform(0, fault_end / 2)
    for _ in range(rng.randint(0, 3)):
        if not kinds or start >= fault_end:
            break
        end = min(fault_end, start + rng.uniform(2, 25))
        kind = rng.choice(kinds)
        retry_after = rng.choice((None, 1.0, 7.0)) if kind is ApiFault.RATE_LIMITED else None
        windows.append(Window(kind, start, end, retry_after))
        start = end + rng.uniform(0, 20)
    return tuple(windows)


def with_settings(plan: FaultPlan, **settings: object) -> FaultPlan:
    return replace(plan, settings={**plan.settings, **settings})
