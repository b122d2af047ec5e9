"""Named fault plans: issue 21's defects 1-5 as the simulator meets them, and what it found.

Each was found failing on the code as it was when the simulator was written; its test in
``test_scenarios.py`` is a strict xfail until the fix lands, then a guard against its return.
"""

from __future__ import annotations

from tests.simulation.faults import (
    BASE_SETTINGS,
    ApiFault,
    Arrival,
    ClockStep,
    Command,
    FaultPlan,
    Poison,
    Window,
    random_plan,
)
from tests.simulation.world import BEAT_HOST


def _steady(until: float, every: float, count: int = 2) -> tuple[Arrival, ...]:
    """Traffic that keeps arriving: ``count`` messages every ``every`` seconds until ``until``."""
    return tuple(Arrival(n * every, count) for n in range(1, int(until / every) + 1))


# 1. A message that draws a 500 for any request holding it is the oldest due row, and the
# gate has seen no answer yet: its batch fails as "the API's", the circuit opens, and every
# probe is that message.
POISON_AT_HEAD = FaultPlan(
    workers=2,
    arrivals=(Arrival(0.0, 8),),
    poison=((0, Poison.SERVER_ERROR),),
    settings={**BASE_SETTINGS, "OUTBOX_BATCH_SIZE": 8},
)

# 1, second route: two poison messages in one batch after good answers; bisection puts them
# in different halves, both halves fail, which reads as "the API is down".
TWO_POISONS_IN_A_BATCH = FaultPlan(
    workers=1,
    arrivals=(Arrival(0.0, 2), Arrival(5.0, 8)),
    poison=((4, Poison.SERVER_ERROR), (7, Poison.SERVER_ERROR)),
    settings={**BASE_SETTINGS, "OUTBOX_BATCH_SIZE": 8},
)

# 2. An outage opens the circuit; the probe meets a gateway's 403 page: the key is refused
# while the circuit is open, and a single-key outbox waits for ever.
FORBIDDEN_PROBE = FaultPlan(
    workers=2,
    arrivals=(Arrival(0.0, 6), Arrival(70.0, 2)),
    windows=(Window(ApiFault.OUTAGE, 0.0, 40.0), Window(ApiFault.FORBIDDEN, 40.0, 70.0)),
    fault_end=70.0,
)

# 3. A message on which the API hangs, while traffic keeps arriving: each bisection level
# costs a timeout, the lease ends first, and the batch comes back with fresh batch-mates.
HANGING_MESSAGE = FaultPlan(
    workers=2,
    arrivals=(Arrival(0.0, 16), *_steady(150.0, 2.0, 6)),
    poison=((3, Poison.HANG),),
    settings={
        **BASE_SETTINGS,
        "OUTBOX_BATCH_SIZE": 16,
        "OUTBOX_BATCH_SIZE_MAX": 16,
        "OUTBOX_LEASE_SECONDS": 15,
    },
)

# 4. The API took batches of 8, then lowers its item limit to 2: the proven size keeps the
# limit at 8, and every batch draws a chain of too-many-items answers.
LOWERED_ITEM_LIMIT = FaultPlan(
    workers=1,
    arrivals=(Arrival(0.0, 8), *_steady(150.0, 3.0, 4)),
    item_limits=((10.0, 2),),
    fault_end=10.0,
    settings={**BASE_SETTINGS, "OUTBOX_BATCH_SIZE": 8},
)

# 5. A request rate in force, then NTP steps the host's clock back 10 minutes: the slot cursor
# is 10 minutes ahead of it, and every claim is "slot too far" until the clock catches up.
CLOCK_STEPPED_BACK = FaultPlan(
    workers=1,
    arrivals=(Arrival(0.0, 6), *_steady(60.0, 5.0)),
    clock_steps=(ClockStep(10.0, 0, -600.0), ClockStep(10.0, BEAT_HOST, -600.0)),
    fault_end=10.0,
    settings={**BASE_SETTINGS, "OUTBOX_RATE_LIMIT": 2},
)

# Found by the simulator (seed 163): a message isolated while a hang began (the gate had seen
# answers just before) is sent alone in the next outage, where the API answers nobody: each
# lone failure is held against the message, and an innocent message ends `failed` (principle 6:
# outages never burn a message's attempts).
ISOLATED_THEN_OUTAGE = FaultPlan(
    workers=3,
    arrivals=(
        Arrival(0.0, 10),
        Arrival(25.607, 2),
        Arrival(34.458, 5, priority=0),
        Arrival(50.474, 5, priority=2),
        Arrival(84.664, 1),
    ),
    windows=(
        Window(ApiFault.HANG, 14.734, 31.742),
        Window(ApiFault.REFUSED, 37.590, 52.452),
        Window(ApiFault.OUTAGE, 70.356, 84.664),
    ),
    fault_end=84.664,
    settings={**BASE_SETTINGS, "OUTBOX_RATE_LIMIT": 2},
)

# Found by the simulator (seeds 75, 197, 243): a message that draws a 500 is the only one
# sent, from a fresh start; its lone failures were counted against the API (nobody else was
# there to answer), so the circuit opened and probed with it for ever, never blaming it.
POISON_ALONE = FaultPlan(
    workers=2,
    arrivals=(Arrival(0.0, 1), Arrival(30.0, 1)),
    poison=((0, Poison.SERVER_ERROR),),
)

# Found by the simulator (seeds 20 and 285 on SQLite; 285's plan kept here, since claims that
# read each lane past the worker's floor no longer meet the defect in 20's): a message on which
# the API hangs, sent alone with nothing else to compare it with; its first lone timeout is
# taken for a hang of the API, and it then waits a probe interval before it is judged.
HANGING_MESSAGE_ALONE = random_plan(285, excluded={"clock-step"})

# The cost of judging a lone message whose failure nothing else can be compared with: the API
# hangs for a minute while one message is due; after its first timeout (counted against the
# API) each lone timeout a probe interval later is held against it, and it ends `failed`.
HANG_OUTAGE_ALONE = FaultPlan(
    workers=1,
    arrivals=(Arrival(0.0, 1), Arrival(5.0, 1)),
    windows=(Window(ApiFault.HANG, 4.0, 70.0),),
    fault_end=70.0,
)

# Several tenants, each with its own key, the default tenant under WIRAYA_API_KEY: a 429 window
# under the clinic's key alone (Retry-After 7 s), the shop's key's rate configured at one request
# every 5 s (OUTBOX_RATE_LIMITS), WIRAYA_API_KEY's account limited by the API to one request every
# 4 s, learnt from its 429s. Each key's requests keep to its own rate and pause; the others keep
# sending through the clinic's pause (tests/simulation/test_tenants.py).
TENANT_KEYS = {"clinic": "key-of-the-clinic", "shop": "key-of-the-shop"}
DEFAULT_KEY = "key-of-everyone-else"
TENANT_LIMITS = FaultPlan(
    workers=3,
    arrivals=(Arrival(0.0, 12), *_steady(40.0, 2.0, 3)),
    windows=(Window(ApiFault.RATE_LIMITED, 5.0, 25.0, retry_after=7.0, key=TENANT_KEYS["clinic"]),),
    fault_end=25.0,
    tenants=tuple(TENANT_KEYS),
    account_limits=((DEFAULT_KEY, 0.25),),
    settings={
        **BASE_SETTINGS,
        "WIRAYA_API_KEYS": ",".join(f"{tenant}={key}" for tenant, key in TENANT_KEYS.items()),
        "WIRAYA_API_KEY": DEFAULT_KEY,
        "OUTBOX_RATE_LIMITS": "shop=0.2",
    },
)

# Found by the simulator (seed 7064 on SQLite): a worker booked a slot at 0.7 requests/s and
# waits for it; another's 429 brings the rate down to 0.49 meanwhile. The slot booked keeps its
# time, but the cursor it left was spaced at 0.7/s: the next request followed it 1.7 s later.
RATE_LOWERED_WHILE_BOOKED = FaultPlan(
    workers=2,
    arrivals=(
        Arrival(0.0, 7, priority=1),
        Arrival(14.307, 4, priority=2),
        Arrival(19.810, 1, priority=2),
        Arrival(27.953, 4, priority=0),
        Arrival(28.241, 2, priority=1),
    ),
    poison=((13, Poison.TOO_LARGE),),
    windows=(Window(ApiFault.RATE_LIMITED, 13.446, 28.241, 1.0),),
    commands=((1.011, Command.CANCEL), (5.512, Command.RESUME)),
    fault_end=28.241,
)

# Found by the simulator (seed 30833 on SQLite): an outage opens the circuit; the probe's one
# message draws a 500 of its own and is judged alone, which proves nothing of the API, yet the
# rest of the probe's batch went out as if the circuit were closed, its lease given back: a
# request of it hangs, and meanwhile another worker takes a probe of its own.
POISONED_PROBE = FaultPlan(
    workers=2,
    arrivals=(Arrival(0.0, 3), Arrival(19.0, 4), *_steady(60.0, 2.0, 1)),
    poison=((3, Poison.SERVER_ERROR), (5, Poison.HANG)),
    windows=(Window(ApiFault.OUTAGE, 0.0, 20.0),),
    fault_end=20.0,
)

# Found in review: the API's own server answers every request with a 500 for a minute. Each
# probe's message, failing alone, is judged on its own (nothing counted against the API); the
# probe that proved nothing must keep the probe interval, or the next probe follows at once
# (every look of beat) and each spends a message's attempt.
SERVER_ERRORS_FOR_A_MINUTE = FaultPlan(
    workers=2,
    arrivals=(Arrival(0.0, 6),),
    windows=(Window(ApiFault.SERVER_ERRORS, 0.0, 60.0),),
    fault_end=60.0,
    settings={**BASE_SETTINGS, "OUTBOX_POLL_INTERVAL_SECONDS": 1},
)

SCENARIOS: dict[str, FaultPlan] = {
    "poison-at-head": POISON_AT_HEAD,
    "two-poisons-in-a-batch": TWO_POISONS_IN_A_BATCH,
    "forbidden-probe": FORBIDDEN_PROBE,
    "hanging-message": HANGING_MESSAGE,
    "lowered-item-limit": LOWERED_ITEM_LIMIT,
    "clock-stepped-back": CLOCK_STEPPED_BACK,
    "isolated-then-outage": ISOLATED_THEN_OUTAGE,
    "poison-alone": POISON_ALONE,
    "hanging-message-alone": HANGING_MESSAGE_ALONE,
    "hang-outage-alone": HANG_OUTAGE_ALONE,
    "tenant-limits": TENANT_LIMITS,
    "rate-lowered-while-booked": RATE_LOWERED_WHILE_BOOKED,
    "poisoned-probe": POISONED_PROBE,
    "server-errors-for-a-minute": SERVER_ERRORS_FOR_A_MINUTE,
}
