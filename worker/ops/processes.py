"""Child processes as a user starts them, each in its own process group with its output in a log.

The one supervisor of the demo, the end-to-end tests and the benchmarks: start a command, wait
for a line in its log, stop it (SIGTERM, then SIGKILL after a grace period) or kill it, always
signalling its whole group, so that a celery worker's pool processes never outlive it. Also the
one `wait_for`: poll a condition instead of sleeping and hoping.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from worker.errors import ChildExited

T = TypeVar("T")
KILL_WAIT_SECONDS = 10.0  # how long a SIGKILLed process may take to be reaped


def wait_for(condition: Callable[[], T], *, timeout: float, what: str, every: float = 0.05) -> T:
    """Poll ``condition`` until it returns a truthy value, and return that value.

    Raises TimeoutError naming ``what`` once ``timeout`` seconds have passed without one.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"waited {timeout:g} s for {what}")
        time.sleep(every)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: each is held until all are picked, so that two servers
    started later never get the same one."""
    with contextlib.ExitStack() as held:
        probes = [held.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]


@dataclass
class Child:
    """One command, run in a process group of its own, its output appended to ``log``.

    It can be started again after it stopped or was killed (a restart); `output()` and
    `wait_for_log()` then read only what the new run wrote. ``url`` is where it serves, for
    the servers among children. As a context manager it runs for the length of the block.
    """

    name: str
    argv: list[str]
    log: Path
    env: Mapping[str, str] | None = None  # None: this process's environment
    cwd: Path | None = None
    url: str = ""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log_offset: int = field(default=0, repr=False)  # where this run's output starts

    def start(self) -> Self:
        """Start the command, appending to the log; RuntimeError when it is running already."""
        if self.running:
            raise RuntimeError(f"{self.name} is running already")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"=== start {' '.join(self.argv)}\n".encode())
            out.flush()
            self._log_offset = out.tell()
            self.process = subprocess.Popen(
                self.argv,
                env=None if self.env is None else dict(self.env),
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: signals reach its children
            )
        return self

    @property
    def running(self) -> bool:
        """True while the process started last has not exited."""
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        """The process id (also its group's id); RuntimeError when it was never started."""
        if self.process is None:
            raise RuntimeError(f"{self.name} is not started")
        return self.process.pid

    def check(self) -> None:
        """Raise ChildExited when the process has exited on its own."""
        if self.process is not None and self.process.poll() is not None:
            raise ChildExited(
                f"{self.name} exited early (code {self.process.returncode}); "
                f"the end of {self.log}:\n{self.tail()}"
            )

    def terminate(self) -> None:
        """Send SIGTERM to the group (Celery's warm shutdown) without waiting for it."""
        if self.running:
            self._signal_group(signal.SIGTERM)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, wait up to ``grace`` seconds for the exit, then kill what is left."""
        if self.running:
            self._signal_group(signal.SIGTERM)
            assert self.process is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the whole group at once (a crash), and reap the process."""
        if self.process is None:
            return
        self._signal_group(signal.SIGKILL)
        self.process.wait(timeout=KILL_WAIT_SECONDS)
        self._signal_group(signal.SIGKILL)  # orphans left in the group, if any
        self.process = None

    def _signal_group(self, signum: int) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def output(self) -> str:
        """What the current (or last) run has written so far."""
        try:
            with self.log.open("rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = 30.0) -> None:
        """Wait until this run's output matches ``pattern`` (a regular expression).

        ChildExited as soon as the process ends without having written it.
        """
        compiled = re.compile(pattern)

        def seen() -> bool:
            exited = not self.running  # read before the log: an exit after it is caught next
            if compiled.search(self.output()):
                return True
            if exited:
                self.check()
                raise ChildExited(f"{self.name} is not running:\n{self.tail()}")
            return False

        wait_for(seen, timeout=timeout, what=f"{self.name} to log {pattern!r}")

    def tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the whole log."""
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def tree(self) -> list[int]:
        """The process and every descendant (a celery worker's pool processes), by pid."""
        if not self.running:
            return []
        parents: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                parents[int(stat.parent.name)] = int(fields[1])
        found = [self.pid]
        for pid in found:
            found += [child for child, parent in parents.items() if parent == pid]
        return found

    def peak_rss_mib(self) -> list[float]:
        """Each process's peak resident memory so far (VmHWM), in MiB, the tree's root first."""
        peaks = []
        for pid in self.tree():
            with contextlib.suppress(OSError):
                found = re.search(r"VmHWM:\s*(\d+) kB", Path(f"/proc/{pid}/status").read_text())
                if found:
                    peaks.append(int(found.group(1)) / 1024)
        return peaks

    def __enter__(self) -> Self:
        return self if self.running else self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def stop_all(children: list[Child], grace: float = 10.0) -> None:
    """Stop several children at once: all get SIGTERM first, so their shutdowns overlap."""
    for child in children:
        child.terminate()
    for child in children:
        child.stop(grace)
