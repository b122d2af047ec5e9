"""Every error the worker raises of its own has one root, OutboxError, and one drawn tree."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import models
import worker
from models import errors as producer_errors
from worker import errors
from worker.errors import (
    BodyError,
    ChildExited,
    DispatchAlarm,
    GrantsError,
    InputError,
    LockNotTaken,
    MissingRight,
    NotJson,
    OperatorError,
    OutboxError,
    ReportError,
    SettingsError,
)


def modules() -> list[str]:
    """Every module of the producer and the worker but the Celery app (which connects when
    imported) and the command-line entry points (which run when imported)."""
    names = [info.name for info in pkgutil.walk_packages(models.__path__, "models.")]
    names += [info.name for info in pkgutil.walk_packages(worker.__path__, "worker.")]
    return [
        name
        for name in names
        if not name.startswith("worker.runtime") and not name.endswith("__main__")
    ]


def error_classes() -> set[type[BaseException]]:
    """The exception classes the modules define (not the ones they import)."""
    found: set[type[BaseException]] = set()
    for name in modules():
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == name:
                found.add(value)
    return found


def test_every_error_class_is_in_one_of_the_two_errors_modules() -> None:
    # A demo's stop request is not an error: Ctrl-C, caught where it is raised.
    homes = {errors.__name__, producer_errors.__name__}
    elsewhere = {
        f"{error.__module__}.{error.__qualname__}"
        for error in error_classes()
        if error.__module__ not in homes
    }
    assert elsewhere == {"worker.demo.run.Interrupted"}


@pytest.mark.parametrize("module", [errors, producer_errors], ids=lambda module: module.__name__)
def test_every_error_class_is_drawn_in_its_tree(module: object) -> None:
    drawn = getattr(module, "__doc__", None) or ""
    defined = [error for error in error_classes() if error.__module__ == module.__name__]
    assert defined
    for error in defined:
        assert f" {error.__name__} " in drawn, error.__name__


def test_the_workers_errors_have_one_root() -> None:
    for error in error_classes():
        if error.__module__ == errors.__name__:
            assert issubclass(error, OutboxError), error.__name__


@pytest.mark.parametrize(
    "error",
    [SettingsError, OperatorError, MissingRight, DispatchAlarm, InputError, LockNotTaken],
)
def test_each_of_the_workers_errors_is_an_outbox_error(error: type[Exception]) -> None:
    with pytest.raises(OutboxError):
        raise error("reason")


@pytest.mark.parametrize(
    ("error", "also"),
    [
        (SettingsError, ValueError),
        (NotJson, ValueError),
        (BodyError, ValueError),
        (ReportError, ValueError),
        (GrantsError, ValueError),
        (DispatchAlarm, RuntimeError),
        (ChildExited, RuntimeError),
    ],
)
def test_errors_stay_catchable_as_the_builtin_they_were(
    error: type[Exception], also: type[Exception]
) -> None:
    with pytest.raises(also):
        raise error("reason")
    with pytest.raises(OutboxError):
        raise error("reason")
