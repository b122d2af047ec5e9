"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

The file is parsed as Compose reads it (YAML merge keys included) and validated against the
Compose Specification's JSON schema (compose-spec.json beside this file; where it comes from:
compose-spec.md). The checks: the services docs/deployment.md#docker-compose promises exist; each
runs one of the entry points the test suite runs; one service builds the image and the others run
it; every dependency waits on health or completion; beat is never scaled; the sandbox and Prometheus
are opt-in profiles and the API's URL has no default; workers get a stop grace period covering a
request in flight; and no secret is written in the file (passwords and keys come from ${VAR}
substitutions without a default).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import ROOT, service_missing
from worker.dispatch.dispatcher import DISPATCH_BUDGET
from worker.ops.cli import build_parser
from worker.settings import ReceiverSettings, Settings

COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = Path(__file__).with_name("compose-spec.json")
IMAGE = "wiraya-outbox:local"
BUILDER = "migrate"  # runs first, so it builds the image every other outbox service runs

# The commands the tests run: tests/e2e (outbox-celery worker and beat in test_start.py,
# celery worker, beat, flower; the demo), the CLI tests
# (outbox sandbox, outbox metrics) and the migration tests (alembic upgrade head).
ENTRY_POINTS = {
    "migrate": ["alembic", "upgrade", "head"],
    "worker": ["outbox-celery", "-A", "worker", "worker"],
    "beat": ["outbox-celery", "-A", "worker", "beat"],
    "flower": ["celery", "-A", "worker", "flower"],
    "sandbox": ["outbox", "sandbox"],
    "metrics": ["outbox", "metrics"],
    "receiver": ["outbox", "receiver"],
    "grants": ["outbox", "grants"],
}
# Services only `docker compose --profile NAME up` starts.
PROFILES = {"sandbox": ["sandbox"], "prometheus": ["monitoring"]}
DURATION = re.compile(r"^(?:(?P<minutes>\d+)m)?(?:(?P<seconds>\d+)s)?$")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|_AUTH$", re.IGNORECASE)
SUBSTITUTION = re.compile(r"^\$\{(?P<name>[A-Z0-9_]+)(?P<rest>[^}]*)\}$")
URL_PASSWORD = re.compile(r"://[^:/@]+:(?P<password>.+)@")


def test_every_service_readme_promises_is_there(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"postgres", "redis", "prometheus", *ENTRY_POINTS}


def _schema_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    return [
        f"{'/'.join(str(part) for part in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def test_the_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    assert _schema_errors(compose) == []


def test_the_schema_check_catches_a_mistyped_key(compose: dict[str, Any]) -> None:
    # Proof the check above can fail: Compose itself refuses these.
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["depend_on"] = broken["services"]["worker"].pop("depends_on")
    broken["services"]["beat"]["restart"] = ["always"]
    errors = _schema_errors(broken)
    assert any("'depend_on' does not match" in error for error in errors), errors
    assert any(error.startswith("services/beat/restart") for error in errors), errors


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_each_service_runs_an_entry_point_the_tests_run(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    command = services[name]["command"]
    assert isinstance(command, list), "exec form: no shell between Docker and the process"
    assert command[: len(ENTRY_POINTS[name])] == ENTRY_POINTS[name]
    assert services[name]["image"] == IMAGE, "one image, built from this repository"


def test_one_service_builds_the_image_the_others_run(services: dict[str, dict[str, Any]]) -> None:
    # Each `build` of one tag is a build of its own: six of them left containers recording
    # different image ids, and `up --scale worker=2` recreated every service.
    builders = sorted(name for name, service in services.items() if "build" in service)
    assert builders == [BUILDER]
    assert services[BUILDER]["build"] == "."
    for name in ENTRY_POINTS:
        # Never pulled: the tag exists only where it was built.
        assert services[name]["pull_policy"] == "never", name


def test_workers_scale_alone(services: dict[str, dict[str, Any]]) -> None:
    # What would tie another service to the worker count, or stop a second worker starting.
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert "scale" not in worker and "replicas" not in worker.get("deploy", {})
    for name, service in services.items():
        if name != "worker":
            assert "worker" not in (service.get("depends_on") or {}), name


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
    # The sandbox is waited for when its profile runs it, and not required otherwise.
    assert services["worker"]["depends_on"]["sandbox"] == {
        "condition": "service_healthy",
        "required": False,
    }
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])


def test_redis_persists_with_append_only(services: dict[str, dict[str, Any]]) -> None:
    command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in command
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


def _is_list_of_logins(value: str) -> bool:
    """``${A:?..},user:${B:?..}``: comma-separated logins whose secrets all come from outside."""
    return all(
        _is_required_substitution(piece.split(":", 1)[1] if piece[:2] != "${" else piece)
        for piece in re.split(r",(?=[\w.-]*:?\$\{)", value)
    )


def test_no_secret_is_written_in_the_file(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for key, value in _environment(service).items():
            if SECRET_NAME.search(key):
                assert _is_list_of_logins(value), f"{name}.{key} holds a literal"
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
                setting = key.removesuffix("_FILE")  # any setting may come from a file
                assert setting in aliases, f"{name}: {key} is not a setting"


def test_the_api_url_has_no_default_and_the_sandbox_is_opt_in(
    services: dict[str, dict[str, Any]],
) -> None:
    # A deployment that forgets WIRAYA_BASE_URL must not have its messages "accepted" by a
    # sandbox: Compose stops at once with the ${VAR:?message} line instead.
    for name in ("worker", "beat", "flower"):
        url = _environment(services[name])["WIRAYA_BASE_URL"]
        match = SUBSTITUTION.match(url)
        assert match is not None and match["name"] == "WIRAYA_BASE_URL", (name, url)
        assert match["rest"].startswith(":?"), f"{name}: WIRAYA_BASE_URL must be required"
        assert "http://sandbox:8080" in match["rest"] and "--profile sandbox" in match["rest"]
    for name, service in services.items():
        assert service.get("profiles") == PROFILES.get(name), name
    # Where the sandbox runs, plain http to it is the explicit opt-in below.
    assert _environment(services["worker"])["WIRAYA_SANDBOX_HOSTS"] == "sandbox"
    settings = Settings.from_environ(
        {"WIRAYA_BASE_URL": "http://sandbox:8080", "WIRAYA_SANDBOX_HOSTS": "sandbox"}
    )
    assert settings.wiraya_is_local
    command = services["sandbox"]["command"]
    assert command[2:6] == ["--host", "0.0.0.0", "--port", "8080"]
    # It pushes delivery reports to the receiver, with the receiver's login.
    assert command[6:] == ["--callback-url", "http://receiver:8090/wiraya/callbacks"]
    assert "OUTBOX_CALLBACK_AUTH" in _environment(services["sandbox"])


def _default(value: str) -> str:
    """The value of ``${VAR:-default}`` when VAR is unset (a literal stays itself)."""
    match = SUBSTITUTION.match(value)
    if match is None:
        return value
    assert match["rest"].startswith(":-"), value
    return match["rest"][2:]


def _duration(value: str) -> timedelta:
    match = DURATION.match(value)
    assert match is not None and value, f"{value!r} is not a duration like 45s or 1m30s"
    return timedelta(minutes=int(match["minutes"] or 0), seconds=int(match["seconds"] or 0))


def test_workers_stop_after_the_request_in_flight(services: dict[str, dict[str, Any]]) -> None:
    # Warm shutdown lets a dispatch finish: its last batch may start just before the
    # dispatch budget ends and wait out the HTTP timeout; then its answers are recorded.
    worker = services["worker"]
    timeout = timedelta(seconds=float(_default(_environment(worker)["WIRAYA_TIMEOUT_SECONDS"])))
    assert timeout == Settings.model_fields["wiraya_timeout"].default
    grace = _duration(_default(worker["stop_grace_period"]))
    assert grace >= timeout + DISPATCH_BUDGET + timedelta(seconds=10), grace


def test_published_ports_listen_on_localhost_only(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} to the world"
    assert "ports" not in services["postgres"] and "ports" not in services["redis"]


def test_the_dockerfile_installs_the_project_and_drops_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^RUN pip install --no-deps --no-build-isolation \.", dockerfile, re.M)
    for path in ("models", "worker", "sandbox", "migrations", "alembic.ini"):
        assert re.search(rf"^COPY {re.escape(path)}\b", dockerfile, re.MULTILINE), path
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.MULTILINE)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".env"} <= set(ignored)
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_prometheus_scrapes_the_metrics_and_loads_the_alert_rules(
    services: dict[str, dict[str, Any]],
) -> None:
    prometheus = services["prometheus"]
    mounts = prometheus["volumes"]
    for name in ("prometheus.yml", "alerts.yml"):
        assert f"./deploy/prometheus/{name}:/etc/prometheus/{name}:ro" in mounts, name
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]  # beside prometheus.yml in the container
    targets = {
        job["job_name"]: target
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    metrics_port = services["metrics"]["command"][-1]
    assert targets["wiraya-outbox"] == f"metrics:{metrics_port}"
    assert targets["flower"] == "flower:5555"
    assert prometheus["depends_on"]["metrics"] == {"condition": "service_healthy"}


def test_promtool_accepts_the_prometheus_config(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        service_missing("promtool (Debian package prometheus)", FileNotFoundError("not on PATH"))
    # As mounted in the container: both files side by side. The rules are checked on their
    # own where they are written; an empty group list stands in until they exist.
    folder = ROOT / "deploy" / "prometheus"
    shutil.copy(folder / "prometheus.yml", tmp_path)
    alerts = folder / "alerts.yml"
    (tmp_path / "alerts.yml").write_text(alerts.read_text() if alerts.exists() else "groups: []\n")
    done = subprocess.run(
        [str(promtool), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_user_is_created_without_a_warning(tmp_path: Path) -> None:
    # The Dockerfile's own useradd, run against a copy of this machine's account files
    # (--prefix): a uid above SYS_UID_MAX with --system warned at every build.
    dockerfile = (ROOT / "Dockerfile").read_text()
    found = re.search(r"useradd ([^\\\n&]+)", dockerfile)
    assert found is not None, "the Dockerfile creates its user with useradd"
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    if not Path(useradd).exists():
        service_missing("useradd", FileNotFoundError(useradd))
    (tmp_path / "etc").mkdir()
    for name in ("passwd", "group", "shadow", "gshadow", "login.defs"):
        source = Path("/etc") / name
        if source.exists():
            shutil.copy(source, tmp_path / "etc")
    done = subprocess.run(
        [useradd, "--prefix", str(tmp_path), *found[1].split()],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0 and "Permission denied" in done.stderr:
        service_missing("root for useradd --prefix", PermissionError(done.stderr.strip()))
    assert (done.returncode, done.stderr) == (0, "")
    assert ":10001:" in (tmp_path / "etc" / "passwd").read_text()


def test_a_migration_stopped_by_a_signal_is_not_a_success(
    services: dict[str, dict[str, Any]],
) -> None:
    # The image's init reports a process killed by SIGTERM (143) as 0, which suits services
    # stopped before they started anything; the services after migrate wait for its 0.
    entrypoint = re.search(r"^ENTRYPOINT (\[.*\])$", (ROOT / "Dockerfile").read_text(), re.M)
    assert entrypoint is not None and json.loads(entrypoint[1]) == ["tini", "-e", "143", "--"]
    assert services[BUILDER]["entrypoint"] == ["tini", "--"]


def test_the_workers_lease_and_timeout_defaults_are_the_settings(
    services: dict[str, dict[str, Any]],
) -> None:
    # A lease below the timeout + 4 s stops a worker at start: compose passes both, with the
    # settings' own defaults, so raising one in .env leaves the other where the rule can see it.
    environment = _environment(services["worker"])
    for variable, field in (
        ("WIRAYA_TIMEOUT_SECONDS", "wiraya_timeout"),
        ("OUTBOX_LEASE_SECONDS", "lease"),
    ):
        seconds = timedelta(seconds=float(_default(environment[variable])))
        assert seconds == Settings.model_fields[field].default, variable
