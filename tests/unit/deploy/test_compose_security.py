"""docker-compose.yml's least privilege (docs/security.md#in-docker-compose), without Docker.

Each service's environment is held to what it needs; the API key reaches only the services that
load the worker's settings, as a compose secret; each password only the services that use it;
every outbox service connects to PostgreSQL as a role of its own, none as a superuser, and the
roles the init script creates are those `outbox grants` is given; Redis asks for a password;
Flower's /metrics asks for a login Prometheus has; every base image is pinned by version.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from sqlalchemy.engine import make_url

from tests.conftest import ROOT
from worker.ops.cli import build_parser

COMPOSE = ROOT / "docker-compose.yml"
ROLES_SCRIPT = ROOT / "deploy" / "postgres" / "roles.sh"
API = {
    "WIRAYA_BASE_URL",
    "WIRAYA_API_KEY_FILE",
    "WIRAYA_TIMEOUT_SECONDS",
    "OUTBOX_LEASE_SECONDS",
    "WIRAYA_SANDBOX_HOSTS",
    "OUTBOX_BATCH_SIZE",
    "OUTBOX_MAX_PARALLEL_DISPATCHES",
    "CELERY_BROKER_URL",
    "OUTBOX_DATABASE_URL",
}
DB_PASSWORDS = {
    f"DB_{role}_PASSWORD" for role in ("OWNER", "WORKER", "RECEIVER", "OPERATOR", "METRICS")
} | {"DB_PRODUCER_PASSWORD"}
# What each service's environment holds, and nothing more.
NEEDS: dict[str, set[str]] = {
    "postgres": {"POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD", *DB_PASSWORDS},
    "redis": {"REDIS_PASSWORD"},
    "migrate": {"OUTBOX_DATABASE_URL"},
    "grants": {"OUTBOX_DATABASE_URL"},
    "sandbox": {"OUTBOX_CALLBACK_AUTH"},  # it pushes reports to the receiver, as Wiraya does
    "worker": API,
    "beat": API,
    "flower": API | {"FLOWER_BASIC_AUTH", "FLOWER_TASKS_COLUMNS"},
    "metrics": {"OUTBOX_DATABASE_URL", "CELERY_BROKER_URL"},
    "prometheus": set(),
    "receiver": {
        "OUTBOX_DATABASE_URL",
        "CELERY_BROKER_URL",
        "OUTBOX_CALLBACK_AUTH",
        "OUTBOX_CALLBACK_MAX_BODY_BYTES",
    },
}
# The role each service logs in as (None: Flower names the database's place, never a login).
LOGINS = {
    "migrate": "outbox_owner",
    "grants": "outbox_owner",
    "worker": "outbox_worker",
    "beat": "outbox_worker",
    "receiver": "outbox_receiver",
    "metrics": "outbox_metrics",
    "flower": None,
}
# Which secret substitution may appear in which services.
SECRET_USERS = {
    "POSTGRES_PASSWORD": {"postgres"},
    "DB_OWNER_PASSWORD": {"postgres", "migrate", "grants"},
    "DB_WORKER_PASSWORD": {"postgres", "worker", "beat"},
    "DB_RECEIVER_PASSWORD": {"postgres", "receiver"},
    "DB_OPERATOR_PASSWORD": {"postgres"},
    "DB_METRICS_PASSWORD": {"postgres", "metrics"},
    "DB_PRODUCER_PASSWORD": {"postgres"},
    "REDIS_PASSWORD": {"redis", "worker", "beat", "flower", "metrics", "receiver"},
    "WIRAYA_API_KEY": set(),  # a compose secret, never an environment variable
    "OUTBOX_CALLBACK_AUTH": {"receiver", "sandbox"},
    "FLOWER_BASIC_AUTH": {"flower"},
    "FLOWER_PROMETHEUS_PASSWORD": {"flower"},
}
USED = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)")


def environment(service: dict[str, Any]) -> dict[str, str]:
    return {str(key): str(value) for key, value in (service.get("environment") or {}).items()}


def test_each_service_gets_only_the_environment_it_needs(
    services: dict[str, dict[str, Any]],
) -> None:
    assert {name: set(environment(service)) for name, service in services.items()} == NEEDS


def test_each_secret_reaches_only_the_services_using_it(
    services: dict[str, dict[str, Any]],
) -> None:
    found: dict[str, set[str]] = {name: set() for name in SECRET_USERS}
    for name, service in services.items():
        for value in environment(service).values():
            for used in USED.finditer(value):
                if used["name"] in found:
                    found[used["name"]].add(name)
    assert found == SECRET_USERS


def test_the_api_key_is_a_secret_of_the_services_loading_the_workers_settings(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    holders = {name for name, service in services.items() if service.get("secrets")}
    assert {n for n in holders if "wiraya_api_key" in services[n]["secrets"]} == {
        "worker",
        "beat",
        "flower",
    }
    assert compose["secrets"]["wiraya_api_key"] == {"environment": "WIRAYA_API_KEY"}
    for name in ("worker", "beat", "flower"):
        assert environment(services[name])["WIRAYA_API_KEY_FILE"] == "/run/secrets/wiraya_api_key"


def test_every_service_logs_in_as_its_own_role_never_a_superuser(
    services: dict[str, dict[str, Any]],
) -> None:
    script = ROLES_SCRIPT.read_text()
    created = set(re.findall(r"CREATE ROLE (\w+) LOGIN", script))
    superuser = environment(services["postgres"])["POSTGRES_USER"]
    for name, role in LOGINS.items():
        url = make_url(environment(services[name])["OUTBOX_DATABASE_URL"])
        assert url.username == role, name
        assert url.username != superuser, name
        assert role is None or role in created, name
    assert re.search(r"CREATE ROLE outbox_owner LOGIN NOSUPERUSER", script)
    assert "ALTER DATABASE outbox OWNER TO outbox_owner" in script
    assert "SUPERUSER" not in script.replace("NOSUPERUSER", "")
    # The grants service gives the very roles the services log in as their rights.
    args = build_parser().parse_args(services["grants"]["command"][1:])
    assert args.apply
    assert (args.worker, args.receiver, args.metrics) == (
        "outbox_worker",
        "outbox_receiver",
        "outbox_metrics",
    )
    assert {args.producer, args.operator} <= created
    # No password on a command line: psql reads each from the environment itself.
    assert "\\getenv owner_password DB_OWNER_PASSWORD" in script
    assert not re.search(r"-v \w*password", script, re.IGNORECASE)
    mounts = services["postgres"]["volumes"]
    assert "./deploy/postgres/roles.sh:/docker-entrypoint-initdb.d/roles.sh:ro" in mounts


def test_every_service_after_the_migrations_waits_for_the_grants(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ("worker", "beat", "flower", "metrics", "receiver"):
        assert services[name]["depends_on"]["grants"] == {
            "condition": "service_completed_successfully"
        }
    assert services["grants"]["depends_on"]["migrate"] == {
        "condition": "service_completed_successfully"
    }


def test_redis_asks_for_the_password_its_clients_give(services: dict[str, dict[str, Any]]) -> None:
    command = " ".join(services["redis"]["command"])
    assert 'printf "requirepass %s\\n" "$$REDIS_PASSWORD" | exec redis-server -' in command
    assert "REDISCLI_AUTH" in " ".join(services["redis"]["healthcheck"]["test"])
    for name in ("worker", "beat", "flower", "metrics", "receiver"):
        url = make_url(environment(services[name])["CELERY_BROKER_URL"])
        assert url.password is not None and str(url.password).startswith("${REDIS_PASSWORD:?")


def test_flowers_metrics_ask_for_a_login_prometheus_has(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    logins = environment(services["flower"])["FLOWER_BASIC_AUTH"]
    assert ",prometheus:${FLOWER_PROMETHEUS_PASSWORD:?" in logins
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (flower,) = [job for job in config["scrape_configs"] if job["job_name"] == "flower"]
    assert flower["basic_auth"] == {
        "username": "prometheus",
        "password_file": "/run/secrets/flower_prometheus_password",
    }
    assert services["prometheus"]["secrets"] == ["flower_prometheus_password"]
    assert compose["secrets"]["flower_prometheus_password"] == {
        "environment": "FLOWER_PROMETHEUS_PASSWORD"
    }


PINNED = re.compile(r"^[\w./-]+:v?\d+\.\d+(?:\.\d+)?(?:-[\w.]+)?$")


def test_every_base_image_is_pinned_by_version(services: dict[str, dict[str, Any]]) -> None:
    pulled = [
        service["image"] for service in services.values() if service.get("pull_policy") != "never"
    ]
    assert pulled and all(PINNED.match(image) for image in pulled), pulled
    bases = re.findall(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert bases and all(re.match(r"^[\w./-]+:\d+\.\d+\.\d+(?:-[\w.-]+)?$", b) for b in bases)
