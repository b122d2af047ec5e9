"""Every error the worker raises of its own has one root, OutboxError."""

from __future__ import annotations

import pytest

from worker.errors import DispatchAlarm, OutboxError
from worker.ops.access import OperatorError
from worker.settings import SettingsError


@pytest.mark.parametrize("error", [SettingsError, OperatorError, DispatchAlarm])
def test_each_of_the_workers_errors_is_an_outbox_error(error: type[Exception]) -> None:
    with pytest.raises(OutboxError):
        raise error("reason")
