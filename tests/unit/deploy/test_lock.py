"""Locked dependencies: uv.lock matches pyproject.toml, and every install takes its exports.

`make install`, CI (which runs make) and the image install the versions pinned, with hashes,
in requirements.txt (what runs), requirements-dev.txt (that and the test tools) and
requirements-build.txt (the build backend), and requirements-tracing.txt (what runs, with the
tracing extra, for `docker build --build-arg EXTRAS=tracing`): all exported from uv.lock by
`make lock`.
A dependency added to pyproject.toml without `make lock` fails here, with the command to run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT

UV = Path(sys.executable).parent / "uv"
LOCKED = (
    "requirements.txt",
    "requirements-dev.txt",
    "requirements-build.txt",
    "requirements-tracing.txt",
)
RELOCK = "run `make lock` and commit uv.lock and requirements*.txt"


def uv(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    # Offline: the check compares files, it needs no index (nor a cache).
    return subprocess.run(
        [str(UV), *args, "--offline", "--quiet"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def export_commands() -> list[list[str]]:
    """The `uv export` commands of `make lock`, as make expands them."""
    done = subprocess.run(
        ["make", "--dry-run", "--always-make", "lock"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    commands = [line.split() for line in done.stdout.splitlines() if " export " in line]
    assert commands, done.stdout
    return commands


def without_header(text: str) -> list[str]:
    """The pins and hashes (the header's comment names the output file)."""
    lines = text.splitlines()
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return lines


def test_the_lock_matches_pyproject() -> None:
    done = uv("lock", "--check")
    assert done.returncode == 0, f"uv.lock is out of date: {RELOCK}\n{done.stderr}"


def test_the_check_notices_a_dependency_added_without_relocking(tmp_path: Path) -> None:
    shutil.copy(ROOT / "uv.lock", tmp_path)
    pyproject = (ROOT / "pyproject.toml").read_text()
    changed = pyproject.replace("dependencies = [\n", 'dependencies = [\n    "six>=1",\n', 1)
    assert changed != pyproject
    (tmp_path / "pyproject.toml").write_text(changed)
    (tmp_path / "README.md").write_text("readme\n")
    assert uv("lock", "--check", cwd=tmp_path).returncode != 0


def test_each_requirements_file_is_the_locks_export(tmp_path: Path) -> None:
    commands = export_commands()
    assert sorted(command[command.index("-o") + 1] for command in commands) == sorted(LOCKED)
    for command in commands:
        output = command.index("-o") + 1
        name = command[output]
        command[output] = str(tmp_path / name)
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        exported = without_header((tmp_path / name).read_text())
        assert without_header((ROOT / name).read_text()) == exported, f"{name}: {RELOCK}"


def test_every_pin_has_a_hash() -> None:
    for name in LOCKED:
        text = (ROOT / name).read_text()
        pins = re.findall(r"^([A-Za-z0-9_.\-\[\]]+)==\S+", text, re.MULTILINE)
        assert pins, name
        for block in re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1]):
            if "==" in block.split("\n", 1)[0]:
                assert "--hash=sha256:" in block, f"{name}: {block.splitlines()[0]}"


def test_the_build_group_is_the_build_system() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["dependency-groups"]["build"] == pyproject["build-system"]["requires"]


@pytest.mark.parametrize(
    ("path", "installs"),
    [
        ("Makefile", r"pip install .*--require-hashes -r requirements-dev\.txt"),
        ("Makefile", r"pip install .*--no-deps --no-build-isolation -e \."),
        ("Dockerfile", r"pip install --require-hashes -r requirements\.txt"),
        ("Dockerfile", r"pip install --no-deps --no-build-isolation \."),
    ],
)
def test_every_install_takes_the_locked_versions(path: str, installs: str) -> None:
    text = (ROOT / path).read_text()
    assert re.search(installs, text), f"{path} must run {installs!r}"
    assert "requirements-build.txt" in text, f"{path}: the build backend is locked too"
    assert not re.search(r"pip install (--quiet )?(-e )?['\"]?\.(\[dev\])?['\"]?\s*$", text, re.M)
