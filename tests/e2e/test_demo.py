"""`outbox demo` (what `make demo` runs) end to end: real celery processes, no servers needed."""

from __future__ import annotations

import os
import re
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
    # The campaign and the codes, plus the sending policy's examples: four accepted (the two
    # paced messages, the SMS, the original of the copy), two failed, one held.
    assert "expected        1,991 accepted, 24 failed" in out
    assert "all 1,991 match the API's ledger" in out
    assert "delivery        1,971 delivered, 20 not delivered (" in out
    for content_type in ("SMSProject", "WhatsappProject", "VoiceProject", "SMSFromAlpha"):
        assert content_type in out
    # The urgent lane: codes enqueued mid-campaign are accepted without waiting for it.
    assert "urgent codes    5 sent while the campaign drained, each accepted" in out
    assert "rejected: recipient is blocked" in out
    assert "gave up after 4 attempts" in out
    assert "What to try next" in out
    assert not _processes_in(folder), "celery processes outlived the demo"
    assert "receiver stopped" in (folder / "receiver.log").read_text()


@pytest.mark.timeout(90)
def test_the_summary_shows_one_message_caught_by_each_policy_rule(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    process = _demo(folder, "--messages", "200")
    out, _ = process.communicate(timeout=75)
    assert process.returncode == 0, out
    assert "opted out     demo-policy-opted-out failed unsent (0 attempts): suppressed: STOP" in out
    assert (
        "duplicate     demo-policy-copy failed unsent (0 attempts): "
        "duplicate of demo-policy-original" in out
    )
    paced = re.search(
        r"paced +demo-policy-paced-2 accepted (\d+\.\d)s after demo-policy-paced-1", out
    )
    assert paced is not None, out
    assert float(paced.group(1)) >= 1.9  # the interval is 2 s; its clock rounds to milliseconds
    assert "1 attempt: held without spending one" in out
    assert "SMS segments  demo-policy-sms 2 parts, UCS-2: one curly quote" in out
    assert "(with a straight one, 1 part in GSM-7)" in out
    held = re.search(
        r"held by quiet hours until \d\d:\d\d UTC \((\d\d:\d\d) \S+, window \S+-(\d\d:\d\d)\)", out
    )
    assert held is not None, out
    assert held.group(1) == held.group(2), "held until the window's end in the recipient's zone"
    assert ", pending, 0 attempts; not waited for" in out


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
