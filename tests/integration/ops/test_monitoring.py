"""deploy/: the Grafana dashboard and the Prometheus alert rules, against a real `outbox metrics`.

`promtool` (Debian package `prometheus`, installed by .ci/run) checks the rules and runs their
unit tests; every expression of the rules and of the dashboard must name only metrics, and
label values, that a real `outbox metrics` endpoint serves.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine

from tests.conftest import REQUIRE_SERVICES, ROOT
from tests.integration.ops.endpoint import samples, scrape_endpoint

DASHBOARD = ROOT / "deploy" / "grafana" / "outbox.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
METRIC = re.compile(r"\b(outbox_[a-z0-9_]+)(\{[^}]*\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is not installed (apt-get install prometheus)"
        if REQUIRE_SERVICES:
            pytest.fail(f"{message}; OUTBOX_REQUIRE_SERVICES=1 forbids skipping")
        pytest.skip(message)
    return found


def test_promtool_accepts_the_alert_rules() -> None:
    done = subprocess.run(
        [promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_the_alerts_fire_when_they_should_and_only_then() -> None:
    done = subprocess.run(
        [promtool(), "test", "rules", str(ALERT_TESTS)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ALERT_TESTS.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def alert_expressions() -> dict[str, str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}


def panels(node: Any) -> Iterator[dict[str, Any]]:
    for panel in node.get("panels", []):
        yield panel
        yield from panels(panel)  # rows hold panels of their own


def variables() -> dict[str, dict[str, Any]]:
    """The dashboard's template variables, by name."""
    dashboard = json.loads(DASHBOARD.read_text())
    return {variable["name"]: variable for variable in dashboard["templating"]["list"]}


def dashboard_expressions(*, resolved: bool = True) -> dict[str, str]:
    """Each panel target's expression, its variables replaced by what "All" selects."""
    dashboard = json.loads(DASHBOARD.read_text())
    found = {}
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            expression = target["expr"]
            for name, variable in variables().items():
                if resolved and "allValue" in variable:
                    expression = expression.replace(f"${name}", variable["allValue"])
            found[f"{panel['title']} / {target.get('refId', '?')}"] = expression
    return found


@pytest.fixture
def served(filled_postgres: Engine, counters_url: str) -> dict[str, set[tuple[str, str]]]:
    """Every sample name a real `outbox metrics` serves, with the label pairs seen on it."""
    url = filled_postgres.url.render_as_string(hide_password=False)
    names: dict[str, set[tuple[str, str]]] = {}
    quotas = {"OUTBOX_DAILY_QUOTAS": "clinic=100", "OUTBOX_DAILY_SEGMENT_QUOTAS": "clinic=300"}
    for name, labels in samples(scrape_endpoint(url, counters_url, **quotas)):
        names.setdefault(name, set()).update(labels)
    return names


def unserved(expression: str, served: dict[str, set[tuple[str, str]]]) -> list[str]:
    """The metric names and label values of an expression that the endpoint does not serve."""
    problems = []
    for name, matchers in METRIC.findall(expression):
        if name not in served:
            problems.append(name)
            continue
        for label, operator, value in MATCHER.findall(matchers):
            values = {seen for key, seen in served[name] if key == label}
            if not values:
                problems.append(f"{name} has no label {label}")
            elif operator == "=" and value not in values:
                problems.append(f'{name}{{{label}="{value}"}} is never served')
            elif operator == "=~" and not any(re.fullmatch(value, seen) for seen in values):
                problems.append(f'{name}{{{label}=~"{value}"}} matches nothing served')
    return problems


def test_every_alert_names_metrics_the_endpoint_serves(
    served: dict[str, set[tuple[str, str]]],
) -> None:
    expressions = alert_expressions()
    wanted = {"OutboxBacklogAge", "OutboxUrgentBacklogAge", "OutboxCircuitOpen"}
    wanted |= {"OutboxApiKeyRefused", "OutboxFailureRate", "OutboxNoWorker"}
    wanted |= {"OutboxTenantQuotaNearlyUsed", "OutboxTenantQuotaUsedUp"}
    assert set(expressions) >= wanted
    for alert, expression in expressions.items():
        assert METRIC.search(expression), alert
        assert not unserved(expression, served), (alert, unserved(expression, served))


def test_every_dashboard_panel_names_metrics_the_endpoint_serves(
    served: dict[str, set[tuple[str, str]]],
) -> None:
    expressions = dashboard_expressions()
    assert len(expressions) >= 10
    for where, expression in expressions.items():
        assert METRIC.search(expression), where
        assert not unserved(expression, served), (where, unserved(expression, served))
    text = " ".join(expressions.values())
    for wanted in (
        "outbox_messages{",  # backlog by status
        "outbox_pending_messages",  # ... and by priority
        "outbox_oldest_pending_age_seconds",
        "rate(outbox_messages_accepted_total",
        "outbox_messages_failed_total",
        "outbox_api_request_duration_seconds_bucket",
        "outbox_circuit_open",
        "outbox_api_key_refused",
        "outbox_tenant_pending",
        "outbox_tenant_oldest_due_seconds",
        "outbox_tenant_quota_used",
    ):
        assert wanted in text, wanted


def test_a_tenant_variable_filters_every_tenant_labelled_panel() -> None:
    tenant = variables()["tenant"]
    assert tenant["type"] == "query" and tenant["includeAll"] and tenant["multi"]
    assert "label_values(outbox_tenant_pending, tenant)" in tenant["query"]["query"]
    assert tenant["allValue"] == ".*"  # "All" keeps the default tenant, whose label is empty
    labelled = {
        where: expression
        for where, expression in dashboard_expressions(resolved=False).items()
        if "outbox_tenant_" in expression
    }
    assert len(labelled) >= 3
    for where, expression in labelled.items():
        for name, matchers in METRIC.findall(expression):
            if name.startswith("outbox_tenant_"):
                assert 'tenant=~"$tenant"' in matchers, (where, name)


def test_the_dashboard_is_importable_grafana_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["uid"]
    assert isinstance(dashboard["schemaVersion"], int)
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard):
        assert {"type", "title", "gridPos"} <= set(panel), panel.get("title")
