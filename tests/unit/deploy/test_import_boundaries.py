"""Layer rules: models import neither the worker, Celery nor httpx (import-linter, at run time)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("models", "worker", "sandbox")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def run_lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_projects_contracts_are_kept() -> None:
    result = run_lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "models stay free of the worker, Celery and httpx KEPT" in result.stdout
    assert "0 broken" in result.stdout


def test_the_models_contract_catches_a_forbidden_import(tmp_path: Path) -> None:
    # The same contract over a copy where models imports httpx: it must be reported broken,
    # so the test above cannot pass merely because the contract checks nothing.
    pyproject = (ROOT / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(pyproject[pyproject.index("[tool.importlinter]") :])
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text('"""Stand-in."""\n')
    for module in sorted(_project_modules_named_in_contracts(pyproject)):
        package = tmp_path / module.replace(".", "/")
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text('"""Stand-in."""\n')
    (tmp_path / "models" / "sending.py").write_text("import httpx\n")
    result = run_lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "models stay free of the worker, Celery and httpx BROKEN" in result.stdout
    assert "models.sending -> httpx" in result.stdout


def test_importing_models_loads_no_worker_celery_or_httpx() -> None:
    script = textwrap.dedent(
        """
        import sys
        import models, models.producer
        loaded = {name.split(".")[0] for name in sys.modules}
        print(sorted(loaded & {"worker", "sandbox", "celery", "kombu", "httpx"}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == "[]"


def _project_modules_named_in_contracts(pyproject: str) -> set[str]:
    """Subpackages such as worker.dispatch that a contract names: the copy needs them too."""
    contracts = tomllib.loads(pyproject)["tool"]["importlinter"]["contracts"]
    names = {
        name
        for contract in contracts
        for key in ("source_modules", "forbidden_modules", "layers")
        for name in contract.get(key, [])
    }
    return {name for name in names if "." in name and name.split(".")[0] in PACKAGES}
