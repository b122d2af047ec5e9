"""The one supervisor of the demo, the end-to-end tests and the benchmarks, on real processes."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from worker.errors import ChildExited
from worker.ops.processes import Child, stop_all, wait_for

# A parent that starts a grandchild in the background, says so, and waits: killing the
# parent alone would leave the grandchild running.
FAMILY = "sleep 300 & echo grandchild $!; echo ready; wait"


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped by init) counts as gone."""
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def _grandchild(child: Child) -> int:
    child.wait_for_log(r"grandchild \d+", timeout=10)
    return int(child.output().split("grandchild ")[1].split()[0])


def test_wait_for_returns_the_first_truthy_value() -> None:
    values = iter([None, 0, "", "found"])
    assert wait_for(lambda: next(values), timeout=5, what="a value", every=0.001) == "found"


def test_wait_for_names_what_it_waited_for() -> None:
    with pytest.raises(TimeoutError, match=r"waited 0\.1 s for the moon"):
        wait_for(lambda: False, timeout=0.1, what="the moon")


def test_kill_takes_the_whole_group(tmp_path: Path) -> None:
    child = Child("family", ["sh", "-c", FAMILY], tmp_path / "family.log").start()
    grandchild = _grandchild(child)
    assert grandchild in child.tree()
    child.kill()
    wait_for(lambda: not _alive(grandchild), timeout=10, what="the grandchild to die")
    assert not child.running


def test_stop_sends_sigterm_then_sigkill_after_the_grace(tmp_path: Path) -> None:
    stubborn = ["sh", "-c", "trap 'echo term' TERM; echo ready; while :; do sleep 0.05; done"]
    child = Child("stubborn", stubborn, tmp_path / "stubborn.log").start()
    child.wait_for_log("ready", timeout=10)
    started = time.monotonic()
    child.stop(grace=0.5)
    assert time.monotonic() - started >= 0.5
    assert not child.running
    assert "term" in child.output()  # it got the SIGTERM first


def test_stop_all_lets_shutdowns_overlap(tmp_path: Path) -> None:
    polite = ["sh", "-c", "trap 'sleep 0.5; exit 0' TERM; echo ready; while :; do sleep 0.05; done"]
    children = [Child(f"c{n}", polite, tmp_path / f"c{n}.log").start() for n in range(3)]
    for child in children:
        child.wait_for_log("ready", timeout=10)
    started = time.monotonic()
    stop_all(children, grace=5)
    assert time.monotonic() - started < 1.4  # three half-second shutdowns at once, not in a row
    assert not any(child.running for child in children)


def test_wait_for_log_fails_at_once_when_the_child_exits(tmp_path: Path) -> None:
    child = Child("quitter", ["sh", "-c", "echo bye; exit 3"], tmp_path / "quitter.log").start()
    started = time.monotonic()
    with pytest.raises(ChildExited, match=r"(?s)quitter exited early \(code 3\).*bye"):
        child.wait_for_log("never", timeout=30)
    assert time.monotonic() - started < 10


def test_a_restart_waits_for_its_own_output_only(tmp_path: Path) -> None:
    log = tmp_path / "twice.log"
    child = Child("twice", [sys.executable, "-c", "print('ready', flush=True)"], log)
    child.start().wait_for_log("ready", timeout=10)
    child.stop()
    child.argv = ["sh", "-c", "sleep 300"]
    child.start()
    with pytest.raises(TimeoutError):
        child.wait_for_log("ready", timeout=0.3)  # the first run's line does not count
    child.kill()
    assert log.read_text().count("=== start") == 2  # one log, both runs


def test_as_a_context_manager_it_runs_for_the_block(tmp_path: Path) -> None:
    with Child("block", ["sh", "-c", FAMILY], tmp_path / "block.log") as child:
        grandchild = _grandchild(child)
        assert child.running and child.peak_rss_mib()
    assert not child.running
    wait_for(lambda: not _alive(grandchild), timeout=10, what="the grandchild to die")
