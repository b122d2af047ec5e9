"""The sending policy's settings: quiet hours, pacing, the duplicate guard, opt-outs."""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property
from typing import Annotated, Self

from pydantic import BeforeValidator, Field, model_validator

from models import Priority
from worker.policy import Policy, QuietWindow
from worker.setting_concern import _Concern
from worker.setting_values import seconds

# A number of seconds where 0 turns the rule off.
SecondsOrOff = Annotated[
    timedelta, BeforeValidator(seconds), Field(ge=timedelta(0), le=timedelta(days=7))
]
LANES = {priority.name.lower(): priority for priority in Priority}


class PolicySettings(_Concern):
    """What the outbox holds back or refuses at claim time, whatever the producer wrote."""

    quiet_hours: str = Field("", alias="OUTBOX_QUIET_HOURS")
    quiet_priorities: str = Field("bulk", alias="OUTBOX_QUIET_PRIORITIES")
    recipient_min_interval: SecondsOrOff = Field(
        timedelta(0), alias="OUTBOX_RECIPIENT_MIN_INTERVAL_SECONDS"
    )
    dedupe_window: SecondsOrOff = Field(timedelta(0), alias="OUTBOX_DEDUPE_WINDOW_SECONDS")
    suppress_after_not_delivered: int = Field(
        0, alias="OUTBOX_SUPPRESS_AFTER_NOT_DELIVERED", ge=0, le=1_000
    )

    @model_validator(mode="after")
    def _check_policy(self) -> Self:
        if self.quiet_hours.strip():
            try:
                QuietWindow.parse(self.quiet_hours)
            except ValueError as error:
                raise ValueError(f"OUTBOX_QUIET_HOURS: {error}") from None
        self.quiet_lanes  # noqa: B018 - raises for an unknown lane name
        return self

    @property
    def quiet_lanes(self) -> frozenset[Priority]:
        """The lanes OUTBOX_QUIET_PRIORITIES names (urgent, normal, bulk)."""
        names = {name.strip().lower() for name in self.quiet_priorities.split(",") if name.strip()}
        unknown = sorted(names - LANES.keys())
        if unknown:
            raise ValueError(
                f"OUTBOX_QUIET_PRIORITIES: {', '.join(unknown)} is no lane (urgent, normal, bulk)"
            )
        return frozenset(LANES[name] for name in names)

    @cached_property
    def policy(self) -> Policy:
        """The rules in force, as the dispatcher applies them."""
        written = self.quiet_hours.strip()
        return Policy(
            quiet_hours=QuietWindow.parse(written) if written else None,
            quiet_lanes=self.quiet_lanes,
            min_interval=self.recipient_min_interval,
            dedupe_window=self.dedupe_window,
            suppress_after_not_delivered=self.suppress_after_not_delivered,
        )
