"""`outbox demo` (what `make demo` runs) end to end: real celery processes, no servers needed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

OUTBOX = str(Path(sys.executable).with_name("outbox"))


def _demo(folder: Path, *flags: str) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "WIRAYA_"))}
    return subprocess.Popen(
        [OUTBOX, "demo", "--folder", str(folder), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
        cwd=folder.parent,
    )


def _processes_in(folder: Path) -> list[int]:
    """Processes whose working directory is ``folder`` (the demo runs celery there)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")) == folder:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.timeout(90)
def test_the_demo_runs_to_its_summary_and_exits_0(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    started = time.monotonic()
    process = _demo(folder)
    out, _ = process.communicate(timeout=75)
    elapsed = time.monotonic() - started
    assert process.returncode == 0, out
    assert elapsed < 60, f"the demo took {elapsed:.1f}s\n{out}"
    assert "expected        1,987 accepted, 22 failed" in out
    assert "all 1,987 match the API's ledger" in out
    assert "delivery        1,967 delivered, 20 not delivered (" in out
    for content_type in ("SMSProject", "WhatsappProject", "VoiceProject", "SMSFromAlpha"):
        assert content_type in out
    # The urgent lane: codes enqueued mid-campaign are accepted without waiting for it.
    assert "urgent codes    5 sent while the campaign drained, each accepted" in out
    assert "rejected: recipient is blocked" in out
    assert "gave up after 4 attempts" in out
    assert "What to try next" in out
    assert not _processes_in(folder), "celery processes outlived the demo"
    assert "receiver stopped" in (folder / "receiver.log").read_text()


@pytest.mark.timeout(60)
def test_ctrl_c_stops_worker_and_beat_and_exits_130(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    process = _demo(folder, "--messages", "20000")
    assert process.stdout is not None
    lines = []
    for line in process.stdout:  # wait until the progress bar shows sending under way
        lines.append(line)
        if "accepted" in line and "accepted     0" not in line:
            break
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=30)
    out = "".join(lines) + rest
    assert process.returncode == 130, out
    assert "Interrupted: worker and beat stopped" in out
    assert "accepted" in rest.splitlines()[-1]
    assert not _processes_in(folder), "celery processes outlived the demo"
