"""A tenant key's own brakes (its 429 pause, its learnt rate) in `outbox stats`, `outbox inspect
--tenant` and the metrics, named by the tenants it serves, never by the key (both databases).

Only the worker holds the keys (WIRAYA_API_KEYS): it writes each key's tenants on the key's row
of outbox_key_gates; the operator commands read the names from there, never a key.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import generate_latest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from models import SMSProject, enqueue
from tests.integration.ops.endpoint import samples
from worker.api_keys import key_fingerprint
from worker.dispatch import gate as gates
from worker.dispatch.gate import accounts, key_gates
from worker.dispatch.gate.policy import Gate
from worker.ops import metrics
from worker.ops.access import operator_settings
from worker.ops.cli import main
from worker.settings import Settings

SALT = "s3"
KEYS = {
    "clinic": "k3y-of-the-clinic",
    "shop": "k3y-of-the-shop",
    "town": "k3y-of-the-shop",
    "farm": "k3y-of-the-farm",  # not used yet: its row holds its name, no brake
}
DEFAULT_KEY = "k3y-of-everyone-else"
REASON = "RateLimited: 429 (Retry-After 30s)"


def fingerprint(tenant: str) -> str:
    return key_fingerprint(KEYS[tenant], SALT)


def listed(keys: dict[str, str]) -> str:
    return ",".join(f"{tenant}={key}" for tenant, key in keys.items())


def worker_gate(keys: dict[str, str]) -> Gate:
    """A worker's gate, whose settings alone hold the tenants' keys."""
    environ = {"WIRAYA_API_KEY": DEFAULT_KEY, "OUTBOX_KEY_FINGERPRINT_SALT": SALT}
    settings = Settings.from_environ({**environ, "WIRAYA_API_KEYS": listed(keys)})
    return Gate(settings, key_fingerprint(DEFAULT_KEY, SALT), random.Random(0))


def names(engine: Engine) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.execute(select(key_gates.c.fingerprint, key_gates.c.tenants))
        return {str(row.fingerprint): str(row.tenants) for row in rows}


@pytest.fixture
def limited(engine: Engine) -> datetime:
    """A 429 under the clinic's key (paused for 30 s, its rate learnt); the shop's key (which the
    town shares) has its own row, neither paused nor rate limited. Returns the pause's end."""
    now = datetime.now(UTC)
    until = now + timedelta(seconds=30)
    gate = worker_gate(KEYS)
    with engine.begin() as connection:
        for tenant in ("clinic", "shop"):
            gate.read(connection, fingerprint(tenant))
        account = fingerprint("clinic")
        accounts.note_key_rate_limited(
            connection, account=account, now=now, reason=REASON, pause_until=until
        )
        accounts.lower_rate(connection, rate=0.5, ceiling=1.0, now=now, account=account)
    return until


def run(engine: Engine, *argv: str, capsys: pytest.CaptureFixture[str]) -> str:
    url = engine.url.render_as_string(hide_password=False)
    assert main(["--database-url", url, *argv]) == 0
    out = capsys.readouterr().out
    assert not any(key in out for key in KEYS.values())  # never a key
    return out


def test_stats_shows_the_clinic_keys_pause_and_rate_alone(
    engine: Engine, limited: datetime, capsys: pytest.CaptureFixture[str]
) -> None:
    stats = json.loads(run(engine, "stats", "--json", capsys=capsys))
    assert stats["gate"]["paused"] is False  # WIRAYA_API_KEY's brakes: untouched
    assert [
        {name: key[name] for name in ("tenants", "fingerprint", "paused", "rate_per_second")}
        for key in stats["tenant_keys"]
    ] == [
        {
            "tenants": ["clinic"],
            "fingerprint": fingerprint("clinic"),
            "paused": True,
            "rate_per_second": 0.5,
        }
    ]  # the shop's key has a row but no brake in force
    (clinic,) = stats["tenant_keys"]
    assert datetime.fromisoformat(clinic["paused_until"]) == limited
    assert clinic["reason"] == REASON

    text = run(engine, "stats", capsys=capsys)
    (line,) = [line for line in text.splitlines() if "key of" in line]
    assert "key of clinic" in line and "PAUSED for Retry-After until" in line
    assert "at most 0.50 requests/s" in line
    assert "shop" not in text


def test_stats_by_tenant_gives_each_tenant_its_keys_brakes(
    engine: Engine, limited: datetime, capsys: pytest.CaptureFixture[str]
) -> None:
    with Session(engine) as session, session.begin():
        for tenant in ("clinic", "shop", ""):
            content = SMSProject(project_id=1, placeholders=[])
            enqueue(session, recipient="46701234567", content=content, tenant=tenant)
    lines = json.loads(run(engine, "stats", "--tenant", "--json", capsys=capsys))
    keys = {line["tenant"]: line["key"] for line in lines}
    assert keys["clinic"]["paused"] is True and keys["clinic"]["rate_per_second"] == 0.5
    assert keys["shop"]["paused"] is False and keys["shop"]["rate_per_second"] is None
    assert keys[""] is None  # WIRAYA_API_KEY's: the gate's, in `outbox stats`
    text = run(engine, "stats", "--tenant", capsys=capsys)
    (line,) = [line for line in text.splitlines() if "key of" in line]
    assert "key of clinic" in line and "PAUSED for Retry-After" in line


def test_a_tenants_own_view_names_its_keys_brakes(
    engine: Engine, limited: datetime, capsys: pytest.CaptureFixture[str]
) -> None:
    clinic = json.loads(run(engine, "inspect", "--tenant", "clinic", "--json", capsys=capsys))
    assert clinic["key"]["paused"] is True and clinic["key"]["rate_per_second"] == 0.5
    shop = json.loads(run(engine, "inspect", "--tenant", "shop", "--json", capsys=capsys))
    assert shop["key"]["paused"] is False and shop["key"]["rate_per_second"] is None
    town = json.loads(run(engine, "inspect", "--tenant", "town", "--json", capsys=capsys))
    assert town["key"]["tenants"] == ["shop", "town"]  # one key, one account, one brake
    assert town["key"]["fingerprint"] == fingerprint("town") == fingerprint("shop")
    farm = json.loads(run(engine, "inspect", "--tenant", "farm", "--json", capsys=capsys))
    assert (farm["key"]["fingerprint"], farm["key"]["paused"]) == (fingerprint("farm"), False)
    assert farm["key"]["tenants"] == ["farm"]
    default = json.loads(run(engine, "inspect", "--tenant", "", "--json", capsys=capsys))
    assert default["key"] is None  # WIRAYA_API_KEY's: the gate's
    text = run(engine, "inspect", "--tenant", "clinic", capsys=capsys)
    assert "PAUSED for Retry-After" in next(line for line in text.splitlines() if "key" in line)


def test_metrics_show_the_pause_and_rate_under_the_clinic_alone(
    engine: Engine, limited: datetime
) -> None:
    with engine.begin() as connection:  # a key no tenant names now (replaced): ``other``
        account = key_fingerprint("an-old-key", SALT)
        gates.read(connection, account, own_account=True)
        now = datetime.now(UTC)
        accounts.lower_rate(connection, rate=2.0, ceiling=4.0, now=now, account=account)
    settings = operator_settings(
        {
            "OUTBOX_DATABASE_URL": engine.url.render_as_string(hide_password=False),
            "CELERY_BROKER_URL": "filesystem://",
            "WIRAYA_API_KEYS": listed(KEYS),  # set by mistake: the operator's side never reads it
        }
    )
    assert not {"wiraya_api_keys", "key_fingerprint_salt"} & set(type(settings).model_fields)
    got = samples(generate_latest(metrics.registry_for(engine, settings)).decode())
    by_tenant = {
        (name, dict(labels)["tenant"]): value
        for (name, labels), value in got.items()
        if name.startswith("outbox_tenant_key_")
    }
    assert by_tenant == {
        ("outbox_tenant_key_paused", "clinic"): 1,
        ("outbox_tenant_key_rate", "clinic"): 0.5,
        ("outbox_tenant_key_paused", "shop"): 0,  # the town shares the shop's key
        ("outbox_tenant_key_rate", "shop"): 0,
        ("outbox_tenant_key_paused", "town"): 0,
        ("outbox_tenant_key_rate", "town"): 0,
        ("outbox_tenant_key_paused", "farm"): 0,
        ("outbox_tenant_key_rate", "farm"): 0,
        ("outbox_tenant_key_paused", "other"): 0,
        ("outbox_tenant_key_rate", "other"): 2.0,
    }
    assert got[("outbox_sending_paused", ())] == 0  # WIRAYA_API_KEY's: untouched


def test_the_worker_writes_each_keys_tenants_on_its_row(engine: Engine) -> None:
    with engine.begin() as connection:
        worker_gate(KEYS).read(connection)  # any reading: once per process, every key
    assert names(engine) == {
        fingerprint("clinic"): "clinic",
        fingerprint("shop"): "shop,town",  # sorted: one key, one account
        fingerprint("farm"): "farm",
    }  # WIRAYA_API_KEY's brakes are the gate row's: no row, no names


def test_a_worker_corrects_the_names_its_settings_give_otherwise(engine: Engine) -> None:
    with engine.begin() as connection:
        worker_gate(KEYS).read(connection)
    moved = {"clinic": KEYS["clinic"], "town": "a-new-k3y-of-the-town", "shop": KEYS["shop"]}
    with engine.begin() as connection:  # the town has a key of its own; the farm left
        worker_gate(moved).read(connection)
    assert names(engine) == {
        fingerprint("clinic"): "clinic",
        fingerprint("shop"): "shop",
        key_fingerprint(moved["town"], SALT): "town",
        fingerprint("farm"): "",  # a key no tenant names now: `key <fingerprint>`
    }


def test_a_worker_names_the_keys_once_not_at_every_reading(engine: Engine) -> None:
    gate = worker_gate(KEYS)
    with engine.begin() as connection:
        gate.read(connection)
        connection.execute(key_gates.update().values(tenants="renamed"))
        gate.read(connection, fingerprint("clinic"))
    assert set(names(engine).values()) == {"renamed"}  # no write after the first reading
