"""A real `outbox metrics` process, scraped once, and its exposition as samples."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

OUTBOX = str(Path(sys.executable).with_name("outbox"))
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape_endpoint(database_url: str, broker_url: str, **settings: str) -> str:
    """Start `outbox metrics` on a free port (with ``settings`` in its environment), read
    /metrics once, stop it with SIGTERM."""
    port = free_port()
    environment = dict(os.environ, CELERY_BROKER_URL=broker_url, **settings)
    server = subprocess.Popen(
        [OUTBOX, "--database-url", database_url, "metrics", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
    )
    try:
        assert server.stdout is not None
        assert "serving outbox metrics" in server.stdout.readline()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            exposition = str(answer.read().decode())
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=10)
    assert server.returncode == 0
    return exposition


def samples(text: str) -> Samples:
    """Every sample of an exposition, keyed by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
