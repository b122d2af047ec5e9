"""The checks can fail: each test plants a defect in the real code and sees the simulator catch it.

A plant breaks one rule the outbox keeps (a pause obeyed, one probe at a time, a lease
respected, a clear answer final, the rate's spacing, the circuit closing, a lone 400 failing
its message, a learnt batch limit), runs a short fault plan that exercises it, and expects
the property that guards the rule to be violated. Issue 21's defects 1-5 are the other half
of this evidence (``test_scenarios.py``): found on the code as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from models import Status
from tests.simulation.faults import ApiFault, Arrival, FaultPlan, Poison, Window, with_settings
from tests.simulation.runner import run
from tests.simulation.scenarios import TENANT_LIMITS
from worker.dispatch import claim, outcomes, sending
from worker.dispatch.gate import batches, pacing, transitions
from worker.dispatch.record import RowResult
from worker.wiraya.results import Accepted, Rejected

Plant = Callable[[pytest.MonkeyPatch], None]


def ignore_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("worker.dispatch.gate.state.GateView.paused", lambda self, now: False)


def circuit_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("worker.dispatch.gate.state.GateView.circuit_open", lambda *args: False)


def claim_rows_under_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    def every_sending_row(now: Any) -> Any:
        return (
            claim.select(claim.outbox.c.id)
            .where(claim.outbox.c.status == Status.SENDING)
            .order_by(claim.outbox.c.id)
        )

    monkeypatch.setattr(claim, "_expired_leases", every_sending_row)
    rebuilt = {database: claim._claim_statement(database) for database in claim.CLAIMS}
    monkeypatch.setattr(claim, "CLAIMS", rebuilt)


def rejected_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    answer = outcomes.Outcomes.of_answer

    def of_answer(self: outcomes.Outcomes, row: Any, outcome: Any, now: Any) -> RowResult:
        if isinstance(outcome, Rejected):
            return self.retry(row, outcome.reason, now)
        return answer(self, row, outcome, now)

    monkeypatch.setattr(outcomes.Outcomes, "of_answer", of_answer)


def another_tracking_id(monkeypatch: pytest.MonkeyPatch) -> None:
    answer = outcomes.Outcomes.of_answer

    def of_answer(self: outcomes.Outcomes, row: Any, outcome: Any, now: Any) -> RowResult:
        if isinstance(outcome, Accepted):
            outcome = Accepted(outcome.tracking_id[::-1])
        return answer(self, row, outcome, now)

    monkeypatch.setattr(outcomes.Outcomes, "of_answer", of_answer)


def no_spacing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pacing.Pacing, "book_slot", lambda *args, **kwargs: timedelta(0))


def circuit_never_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transitions, "take_probe_if_free", lambda *args, **kwargs: False)


def lone_400_released(monkeypatch: pytest.MonkeyPatch) -> None:
    split = sending._Run._split

    def _split(self: Any, batch: Any, result: Any, now: Any) -> sending.Flow:
        if len(batch) == 1:
            return self.stop(batch)
        return split(self, batch, result, now)

    monkeypatch.setattr(sending._Run, "_split", _split)


def limit_not_learnt(monkeypatch: pytest.MonkeyPatch) -> None:
    for learns in ("too_large", "too_large_for_its_size"):
        monkeypatch.setattr(batches.Batches, learns, lambda *args, **kwargs: None)


def tenants_rates_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    def in_force(self: pacing.Pacing, view: Any, learnt: float | None) -> float | None:
        rates = [rate for rate in (self.configured, learnt) if rate]  # WIRAYA_API_KEY's only
        return min(rates) if rates else None

    monkeypatch.setattr(pacing.Pacing, "in_force", in_force)


TRAFFIC = tuple(Arrival(2.0 * n, 3) for n in range(15))
BUSY = tuple(Arrival(2.0 * n, 12) for n in range(4))
LONG = tuple(Arrival(3.0 * n, 4) for n in range(20))
OUTAGE = (Window(ApiFault.OUTAGE, 5.0, 40.0),)
HANG = (Window(ApiFault.HANG, 5.0, 40.0),)
PLANTS: dict[str, tuple[Plant, FaultPlan, str]] = {
    "a pause ignored": (
        ignore_pauses,
        FaultPlan(
            workers=2,
            arrivals=TRAFFIC,
            windows=(Window(ApiFault.RATE_LIMITED, 5.0, 15.0, 7.0),),
            fault_end=15.0,
        ),
        "paused",
    ),
    "the circuit ignored": (
        circuit_ignored,
        FaultPlan(workers=3, arrivals=TRAFFIC, windows=HANG, fault_end=40.0),
        "probe",
    ),
    "rows under lease claimed": (
        claim_rows_under_lease,
        FaultPlan(workers=3, arrivals=BUSY),
        "twice",
    ),
    "a rejection retried": (
        rejected_is_retried,
        FaultPlan(workers=1, arrivals=(Arrival(0.0, 3),), poison=((1, Poison.BAD_REQUEST),)),
        "resent",
    ),
    "another tracking id stored": (another_tracking_id, FaultPlan(workers=1), "tracking"),
    "no rate spacing": (
        no_spacing,
        with_settings(
            FaultPlan(workers=3, arrivals=TRAFFIC), OUTBOX_RATE_LIMIT=1, OUTBOX_BATCH_SIZE=1
        ),
        "rate",
    ),
    "a tenant's configured rate ignored": (tenants_rates_ignored, TENANT_LIMITS, "rate"),
    "an open circuit never probes": (
        circuit_never_probes,
        FaultPlan(workers=2, arrivals=TRAFFIC, windows=OUTAGE, fault_end=40.0),
        "stalled",
    ),
    "a lone 400 released": (
        lone_400_released,
        FaultPlan(workers=1, arrivals=(Arrival(0.0, 4),), poison=((2, Poison.BAD_REQUEST),)),
        "poison",
    ),
    "the item limit not learnt": (
        limit_not_learnt,
        with_settings(
            FaultPlan(workers=1, arrivals=LONG, item_limits=((0.0, 2),)), OUTBOX_BATCH_SIZE=8
        ),
        "too-large",
    ),
}


@pytest.mark.parametrize("name", PLANTS)
def test_the_simulator_catches_a_planted_defect(
    name: str, sqlite_world: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    plant, plan, expected = PLANTS[name]
    assert run(5, sqlite_world, plan).clean, "the plan runs clean without the plant"
    plant(monkeypatch)
    result = run(5, sqlite_world, plan)
    assert expected in {violation.kind for violation in result.violations}, result.report()
