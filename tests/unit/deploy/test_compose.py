"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

The file is parsed as Compose reads it (YAML merge keys included). The checks: the services
README promises exist; each runs one of the entry points the test suite runs; every
dependency waits on health or completion; beat is never scaled; and no secret is written
in the file (passwords and keys come from ${VAR} substitutions without a default).
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from worker.ops.cli import build_parser
from worker.settings import ReceiverSettings, Settings

COMPOSE = ROOT / "docker-compose.yml"

# The commands the tests run: tests/e2e (celery worker, beat, flower; the demo), the CLI tests
# (outbox sandbox, outbox metrics) and the migration tests (alembic upgrade head).
ENTRY_POINTS = {
    "migrate": ["alembic", "upgrade", "head"],
    "worker": ["celery", "-A", "worker", "worker"],
    "beat": ["celery", "-A", "worker", "beat"],
    "flower": ["celery", "-A", "worker", "flower"],
    "sandbox": ["outbox", "sandbox"],
    "metrics": ["outbox", "metrics"],
    "receiver": ["outbox", "receiver"],
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|_AUTH$", re.IGNORECASE)
SUBSTITUTION = re.compile(r"^\$\{(?P<name>[A-Z0-9_]+)(?P<rest>[^}]*)\}$")
URL_PASSWORD = re.compile(r"://[^:/@]+:(?P<password>.+)@")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def test_every_service_readme_promises_is_there(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"postgres", "redis", *ENTRY_POINTS}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_each_service_runs_an_entry_point_the_tests_run(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    command = services[name]["command"]
    assert isinstance(command, list), "exec form: no shell between Docker and the process"
    assert command[: len(ENTRY_POINTS[name])] == ENTRY_POINTS[name]
    assert services[name].get("build") == ".", "one image, built from this repository"


def test_flower_options_are_written_name_equals_value(
    services: dict[str, dict[str, Any]],
) -> None:
    # Flower parses its own options with tornado, which rejects "--port 5555".
    options = services["flower"]["command"][len(ENTRY_POINTS["flower"]) :]
    assert options and all(option.startswith("--") and "=" in option for option in options)


def test_the_entry_points_exist() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["outbox"] == "worker.ops.cli:main"
    for subcommand in ("sandbox", "metrics", "migrate", "receiver"):
        assert build_parser().parse_args([subcommand]).command == subcommand
    assert (ROOT / "alembic.ini").is_file()
    assert "def __getattr__" in (ROOT / "worker" / "__init__.py").read_text()  # worker.app


def test_dependencies_wait_for_health_or_completion(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for target, rule in (service.get("depends_on") or {}).items():
            assert isinstance(rule, dict), f"{name} -> {target}: say what to wait for"
            condition = rule.get("condition")
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{target} needs a healthcheck"
            else:
                assert condition == "service_completed_successfully", f"{name} -> {target}"
                assert services[target].get("restart") == "no", f"{target} must be one-shot"
    for name in ("worker", "beat", "flower", "metrics", "receiver"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["sandbox"]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])


def test_redis_persists_with_append_only(services: dict[str, dict[str, Any]]) -> None:
    command = services["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in services["redis"]["volumes"])


def test_there_is_exactly_one_beat(services: dict[str, dict[str, Any]]) -> None:
    beat = services["beat"]
    assert beat.get("deploy", {}).get("replicas", 1) == 1
    assert beat.get("scale", 1) == 1


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    assert isinstance(environment, dict), "environment as a mapping"
    return {str(key): str(value) for key, value in environment.items()}


def _is_required_substitution(value: str) -> bool:
    """${VAR}, ${VAR:?why} or ${VAR:-} (empty default): the value comes from outside."""
    match = SUBSTITUTION.match(value)
    if match is None:
        return False
    rest = match["rest"]
    return rest == "" or rest.startswith((":?", "?")) or rest in {":-", "-"}


def test_no_secret_is_written_in_the_file(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for key, value in _environment(service).items():
            if SECRET_NAME.search(key):
                assert _is_required_substitution(value), f"{name}.{key} holds a literal"
            password = URL_PASSWORD.search(value)
            if password:
                assert _is_required_substitution(password["password"]), f"{name}.{key}"


def test_settings_named_in_the_file_are_real_settings(services: dict[str, dict[str, Any]]) -> None:
    aliases = {
        field.alias
        for concern in (Settings, ReceiverSettings)
        for field in concern.model_fields.values()
    }
    for name, service in services.items():
        for key in _environment(service):
            if key.startswith(("OUTBOX_", "WIRAYA_", "CELERY_")):
                assert key in aliases, f"{name}: {key} is not a setting"


def test_the_sandbox_is_the_default_target_without_a_key(
    services: dict[str, dict[str, Any]],
) -> None:
    environment = _environment(services["worker"])
    assert environment["WIRAYA_BASE_URL"] == "${WIRAYA_BASE_URL:-http://sandbox:8080}"
    assert environment["WIRAYA_SANDBOX_HOSTS"] == "sandbox"
    settings = Settings.from_environ(
        {"WIRAYA_BASE_URL": "http://sandbox:8080", "WIRAYA_SANDBOX_HOSTS": "sandbox"}
    )
    assert settings.wiraya_is_local
    assert services["sandbox"]["command"][-4:] == ["--host", "0.0.0.0", "--port", "8080"]


def test_published_ports_listen_on_localhost_only(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} to the world"
    assert "ports" not in services["postgres"] and "ports" not in services["redis"]


def test_the_dockerfile_installs_the_project_and_drops_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^RUN pip install \.", dockerfile, re.MULTILINE)
    for path in ("models", "worker", "sandbox", "migrations", "alembic.ini"):
        assert re.search(rf"^COPY {re.escape(path)}\b", dockerfile, re.MULTILINE), path
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.MULTILINE)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".env"} <= set(ignored)
    assert ".env" in (ROOT / ".gitignore").read_text().split()
