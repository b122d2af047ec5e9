"""deploy/kubernetes/, checked offline: built with kustomize, validated against the Kubernetes
schemas kubernetes-validate bundles (strict: an unknown field fails), KEDA's objects against the
fields of theirs the outbox uses, and held against what the end-to-end tests run and the
settings the outbox reads."""

from __future__ import annotations

import shutil
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.conftest import ROOT, service_missing
from tests.unit.deploy.test_compose import ENTRY_POINTS
from worker.dispatch.dispatcher import DISPATCH_BUDGET
from worker.ops.privileges import ROLES
from worker.ops.queries import due_count_sql
from worker.settings import ReceiverSettings, Settings

KUBERNETES = ROOT / "deploy" / "kubernetes"
BUILDS = {"base": KUBERNETES / "base", "example": KUBERNETES / "overlays" / "example"}
KUBERNETES_VERSION = "1.30.0"  # the oldest minor release still supported when this was written
# What the e2e harness gives every worker and beat it starts (tests/e2e/harness.py worker_env).
E2E_WORKER_ENV = ("OUTBOX_DATABASE_URL", "CELERY_BROKER_URL", "WIRAYA_BASE_URL")
# Each process's database login: its role's (README, Security; `outbox grants`).
DATABASE_KEYS = {
    "worker": "worker-database-url",
    "beat": "worker-database-url",
    "receiver": "receiver-database-url",
    "metrics": "metrics-database-url",
    "migrate": "owner-database-url",
    "grants": "owner-database-url",
}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_NAME = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}
_METADATA = {"type": "object", "required": ["name"], "properties": {"name": _NAME}}


def _keda(spec: dict[str, Any]) -> dict[str, Any]:
    """A KEDA object (keda.sh/v1alpha1) whose spec follows ``spec``."""
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "metadata": _METADATA,
            "spec": spec,
        },
    }


# KEDA's ScaledObject and TriggerAuthentication, the fields used here.
KEDA_SCHEMAS = {
    "ScaledObject": _keda(
        {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {"name": _NAME, "kind": {"type": "string"}},
                },
                **{
                    name: {"type": "integer", "minimum": 0}
                    for name in (
                        "pollingInterval",
                        "cooldownPeriod",
                        "minReplicaCount",
                        "maxReplicaCount",
                    )
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"enum": ["postgresql", "prometheus"]},
                            "metadata": _STRING_MAP,
                            "authenticationRef": {
                                "type": "object",
                                "required": ["name"],
                                "additionalProperties": False,
                                "properties": {"name": _NAME},
                            },
                        },
                    },
                },
            },
        }
    ),
    "TriggerAuthentication": _keda(
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "secretTargetRef": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["parameter", "name", "key"],
                        "additionalProperties": False,
                        "properties": {
                            "parameter": {"type": "string"},
                            "name": _NAME,
                            "key": {"type": "string"},
                        },
                    },
                }
            },
        }
    ),
}


def built(name: str) -> list[dict[str, Any]]:
    """The documents `kubectl kustomize` makes of base or of the example overlay."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        service_missing("kubectl (kustomize)", FileNotFoundError("kubectl"))
    done = subprocess.run(
        [str(kubectl), "kustomize", str(BUILDS[name])], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return [document for document in yaml.safe_load_all(done.stdout) if document]


@pytest.fixture(scope="module", params=sorted(BUILDS))
def documents(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return built(request.param)


def by_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}


def validate(document: dict[str, Any]) -> None:
    """Kubernetes' own kinds against the bundled schemas; KEDA's against KEDA_SCHEMAS."""
    if document["kind"] in KEDA_SCHEMAS:
        jsonschema.validate(document, KEDA_SCHEMAS[document["kind"]])
    else:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def containers(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every container and init container of the workloads, by name."""
    found: dict[str, dict[str, Any]] = {}
    for document in documents:
        pod = _pod(document)
        if pod is not None:
            for container in pod.get("initContainers", []) + pod["containers"]:
                found[container["name"]] = container
    return found


def _pod(document: dict[str, Any]) -> dict[str, Any] | None:
    if document["kind"] not in ("Deployment", "Job"):
        return None
    spec: dict[str, Any] = document["spec"]["template"]["spec"]
    return spec


def command_of(container: dict[str, Any]) -> list[str]:
    """The container's command after the image's init (tini ... --)."""
    command: list[str] = container["command"]
    assert command[0] == "tini", command
    return command[command.index("--") + 1 :]


def env_names(container: dict[str, Any], documents: list[dict[str, Any]]) -> set[str]:
    names = {variable["name"] for variable in container.get("env", [])}
    maps = by_kind(documents, "ConfigMap")
    for source in container.get("envFrom", []):
        names |= set(maps[source["configMapRef"]["name"]]["data"])
    return names


def test_every_document_follows_its_schema(documents: list[dict[str, Any]]) -> None:
    kinds = {document["kind"] for document in documents}
    assert {"Deployment", "Job", "Service", "ConfigMap", "ScaledObject"} <= kinds
    for document in documents:
        validate(document)


@pytest.mark.parametrize(
    ("kind", "mistake"),
    [
        ("Deployment", lambda d: d["spec"]["template"]["spec"].update(terminationGrace=45)),
        ("Deployment", lambda d: d["spec"].update(replicas="two")),
        ("ScaledObject", lambda d: d["spec"].update(minReplicas=0)),
        ("ScaledObject", lambda d: d["spec"]["triggers"][0].update(type="postgres")),
    ],
)
def test_the_schema_check_catches_a_mistake(kind: str, mistake: Any) -> None:
    document = next(iter(by_kind(built("base"), kind).values()))
    mistake(document)
    with pytest.raises((kubernetes_validate.ValidationError, jsonschema.ValidationError)):
        validate(document)


def test_the_workers_and_beats_commands_are_what_the_e2e_tests_run(
    documents: list[dict[str, Any]],
) -> None:
    found = containers(documents)
    for name in ("worker", "beat", "receiver", "metrics", "migrate", "grants"):
        command = command_of(found[name])
        assert command[: len(ENTRY_POINTS[name])] == ENTRY_POINTS[name], name
        for variable in E2E_WORKER_ENV if name in ("worker", "beat") else ():
            assert variable in env_names(found[name], documents), (name, variable)


def test_settings_named_are_real_settings(documents: list[dict[str, Any]]) -> None:
    aliases = {
        field.alias
        for concern in (Settings, ReceiverSettings)
        for field in concern.model_fields.values()
    }
    for name, container in containers(documents).items():
        for variable in env_names(container, documents):
            if variable.startswith(("OUTBOX_", "WIRAYA_", "CELERY_")):
                assert variable.removesuffix("_FILE") in aliases, f"{name}: {variable}"


def test_each_process_logs_in_as_its_own_role(documents: list[dict[str, Any]]) -> None:
    found = containers(documents)
    for name, key in DATABASE_KEYS.items():
        (url,) = [v for v in found[name]["env"] if v["name"] == "OUTBOX_DATABASE_URL"]
        assert url["valueFrom"]["secretKeyRef"]["key"] == key, name
    grants = command_of(found["grants"])
    assert {f"--{role}=outbox_{role}" for role in ROLES} <= set(grants)


def test_no_secret_is_written_in_a_manifest(documents: list[dict[str, Any]]) -> None:
    for name, container in containers(documents).items():
        for variable in container.get("env", []):
            if any(word in variable["name"] for word in ("URL", "KEY", "AUTH", "PASSWORD")):
                is_file = variable["name"].endswith("_FILE")
                assert is_file or "secretKeyRef" in variable.get("valueFrom", {}), name
    for config in by_kind(documents, "ConfigMap").values():
        assert not any("PASSWORD" in key or key.endswith("_KEY") for key in config["data"])


def test_every_pod_runs_as_non_root_without_privileges(documents: list[dict[str, Any]]) -> None:
    for document in documents:
        pod = _pod(document)
        if pod is None:
            continue
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] >= 10000
        assert pod["automountServiceAccountToken"] is False
        for container in pod.get("initContainers", []) + pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["requests"]["memory"]


def test_there_is_exactly_one_beat_and_a_rollout_never_runs_two(
    documents: list[dict[str, Any]],
) -> None:
    beat = by_kind(documents, "Deployment")["outbox-beat"]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    targets = [
        s["spec"]["scaleTargetRef"]["name"] for s in by_kind(documents, "ScaledObject").values()
    ]
    assert targets == ["outbox-worker"]


def test_workers_stop_after_the_request_in_flight(documents: list[dict[str, Any]]) -> None:
    worker = by_kind(documents, "Deployment")["outbox-worker"]
    timeout = timedelta(
        seconds=float(
            by_kind(documents, "ConfigMap")["wiraya-outbox-settings"]["data"][
                "WIRAYA_TIMEOUT_SECONDS"
            ]
        )
    )
    grace = timedelta(seconds=worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])
    assert grace >= timeout + DISPATCH_BUDGET + timedelta(seconds=10)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["worker"]["stop_grace_period"].endswith(
        f"-{int(grace.total_seconds())}s}}"
    )


def test_the_scaler_runs_the_due_query_of_outbox_stats(documents: list[dict[str, Any]]) -> None:
    (scaled,) = by_kind(documents, "ScaledObject").values()
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "postgresql"
    assert trigger["metadata"]["query"] == due_count_sql()
    (auth,) = by_kind(documents, "TriggerAuthentication").values()
    assert auth["metadata"]["name"] == trigger["authenticationRef"]["name"]
    assert auth["spec"]["secretTargetRef"][0]["parameter"] == "connection"


def test_the_example_overlay_scales_to_zero_and_names_a_namespace() -> None:
    documents = built("example")
    (scaled,) = by_kind(documents, "ScaledObject").values()
    assert scaled["spec"]["minReplicaCount"] == 0
    assert {d["metadata"].get("namespace") for d in documents if d["kind"] != "Namespace"} == {
        "outbox"
    }


def test_every_base_file_is_listed_in_its_kustomization() -> None:
    base = BUILDS["base"]
    listed = yaml.safe_load((base / "kustomization.yaml").read_text())["resources"]
    present = sorted(p.name for p in Path(base).glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == present
