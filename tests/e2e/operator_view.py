"""What an operator on call reads, for the game days: `outbox stats`, metrics, alerts, logs.

Each reader goes through the same door an operator does: the `outbox` command (as text and
`--json`), a running `outbox metrics` process scraped over HTTP, `promtool test rules` on the
alert rules with the scraped values held for a while, and the processes' log files. A
`Timeline` keeps what each said and when, for the night's report.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import Stack, http_get, wait_for
from worker.ops.processes import free_port

OUTBOX = str(Path(sys.executable).with_name("outbox"))
ALERT_RULES = Path(__file__).parents[2] / "deploy" / "prometheus" / "alerts.yml"
RUNBOOK = Path(__file__).parents[2] / "docs" / "runbook.md"


def outbox(stack: Stack, *args: str, answer: str | None = None) -> str:
    """Run `outbox ARGS` as an operator does (the stack's settings); its output, stderr too."""
    done = subprocess.run(
        [OUTBOX, *args],
        input=answer,
        capture_output=True,
        text=True,
        env=stack.worker_env(),
        timeout=60,
        check=False,
    )
    return done.stdout + done.stderr


def stats(stack: Stack) -> tuple[str, dict[str, Any]]:
    """`outbox stats` and `outbox stats --json`: the dispatch line and the whole document."""
    text = outbox(stack, "stats")
    line = next((ln.strip() for ln in text.splitlines() if ln.strip().startswith("dispatch")), "")
    return line, json.loads(outbox(stack, "stats", "--json"))


def start_metrics(stack: Stack) -> str:
    """`outbox metrics` as README runs it (default host); returns its URL once it serves."""
    port = free_port()
    service = stack._service(
        "metrics", [OUTBOX, "metrics", "--port", str(port)], stack.worker_env()
    )
    service.start()
    url = f"http://127.0.0.1:{port}/metrics"
    wait_for(lambda: http_get(url)[0] == 200, timeout=30, what="outbox metrics")
    return url


def scrape(url: str) -> dict[str, float]:
    """Every sample of one scrape, keyed as Prometheus shows it: name{label="value",...}."""
    status, body = http_get(url)
    assert status == 200, f"metrics answered {status}"
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


def gauge(samples: dict[str, float], name: str) -> float:
    """One unlabelled sample (0 when absent)."""
    return samples.get(name, 0.0)


def alerts_firing(samples: dict[str, float], *, after: str = "2m") -> set[str]:
    """The alerts of deploy/prometheus/alerts.yml firing ``after`` the scraped values began.

    promtool evaluates the rules over the samples held for ten minutes; each rule is
    expected silent, and the rules promtool reports as firing against that are the answer.
    """
    promtool = shutil.which("promtool")
    if promtool is None:
        raise FileNotFoundError("promtool is not installed (apt-get install prometheus)")
    rules = yaml.safe_load(ALERT_RULES.read_text())
    names = [rule["alert"] for group in rules["groups"] for rule in group["rules"]]
    series = [
        {"series": key, "values": f"{value:g}x10"}
        for key, value in samples.items()
        if key.startswith("outbox_") and value == value  # NaN is no sample
    ]
    test = {
        "rule_files": [str(ALERT_RULES)],
        "evaluation_interval": "30s",
        "tests": [
            {
                "interval": "30s",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": after, "alertname": name, "exp_alerts": []} for name in names
                ],
            }
        ],
    }
    with _scratch_file(yaml.safe_dump(test)) as path:
        done = subprocess.run(
            [promtool, "test", "rules", path], capture_output=True, text=True, check=False
        )
    return set(re.findall(r"alertname: (\w+), time: ", done.stdout + done.stderr))


@contextmanager
def _scratch_file(text: str) -> Iterator[str]:
    """A temporary file holding ``text``, removed afterwards."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "alerts.game-day.yml"
        path.write_text(text)
        yield str(path)


def runbook_section(title: str) -> str:
    """The runbook's section whose heading names ``title``, its lines joined (docs/runbook.md)."""
    text = RUNBOOK.read_text()
    section = rf"^## [^\n]*{re.escape(title)}[^\n]*\n.*?(?=^## |\Z)"
    match = re.search(section, text, re.M | re.S | re.I)
    assert match, f"the runbook has no section about {title!r}"
    return " ".join(match.group(0).split())


@dataclass
class Timeline:
    """What the operator saw, second by second since the night began."""

    name: str
    started: float = field(default_factory=time.monotonic)
    entries: list[tuple[float, str]] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.started

    def note(self, what: str) -> float:
        at = self.now()
        self.entries.append((at, what))
        return at

    def print(self) -> None:
        print(f"\n== {self.name} ==")
        for at, what in self.entries:
            print(f"  t={at:6.1f}s  {what}")


def wait_for_gauge(url: str, name: str, value: float, *, timeout: float) -> dict[str, float]:
    """Scrape until ``name`` reads ``value``; that scrape's samples."""

    def scraped() -> dict[str, float] | None:
        samples = scrape(url)
        return samples if gauge(samples, name) == value else None

    return wait_for(scraped, timeout=timeout, what=f"the metrics to say {name} {value:g}")
