"""The receiver against its OpenAPI document: requests generated from it (schemathesis) over
real HTTP to the receiver as `outbox receiver` configures it, on SQLite; every answer must be
one the document declares (status, content type, body schema), never a 5xx, and a request
without the login must be refused.

Bounded: EXAMPLES generated examples per operation (about 220 requests in all with the
coverage phase's). Two of schemathesis's checks do not apply, by
design, and are left out: a body with some malformed reports is answered 200 (Wiraya would
resend the good ones for ever after a 4xx), so invalid data is not rejected as a whole; and a
doneAt must lie between 2000 and 5 minutes ahead of the receiver's clock, which a JSON schema
cannot say, so a schema-valid body whose every report has a doneAt outside it is answered 400.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from alembic import command
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from tests.conftest import alembic_config
from tests.integration.reports.harness import serving
from tests.integration.reports.test_app import AUTH, LOGIN
from worker.database import make_engine
from worker.reports.app import create_app
from worker.reports.openapi import SCHEMA
from worker.reports.server import server_config
from worker.settings import ReceiverSettings

EXAMPLES = 100
schema = schemathesis.openapi.from_dict(SCHEMA)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The receiver on a fresh SQLite outbox, for the whole module (hypothesis runs many
    examples per test)."""
    url = f"sqlite:///{Path(tmp_path_factory.mktemp('schema')) / 'outbox.db'}"
    command.upgrade(alembic_config(url), "head")
    engine = make_engine(url)
    receiver = ReceiverSettings.from_environ(
        {"OUTBOX_CALLBACK_AUTH": AUTH, "OUTBOX_DATABASE_URL": url}
    )
    app = create_app(engine, receiver)
    with serving(app, config=server_config(app, receiver, log_level="warning")) as base:
        yield base
    engine.dispose()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_answer_is_one_the_document_declares(case: schemathesis.Case, base_url: str) -> None:
    case.call_and_validate(
        base_url=base_url,
        headers=LOGIN,
        excluded_checks=[negative_data_rejection, positive_data_acceptance],
    )
