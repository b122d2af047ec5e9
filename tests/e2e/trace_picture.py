"""docs/tracing.md's picture: the spans one message left, drawn as traces and links, as a PNG.

Each trace is a row of its own, on its own time scale (the enqueue, the batch and the report
are seconds apart, each a few milliseconds long); a child span sits under its parent; a link is
a dashed arrow to the span it names. The spans come from the end-to-end test (OUTBOX_TRACE_SPANS,
tests/e2e/test_traces.py); headless Chromium renders the SVG.

Run: OUTBOX_TRACE_SPANS=/tmp/spans.json .venv/bin/pytest tests/e2e/test_traces.py
     .venv/bin/python -m tests.e2e.trace_picture /tmp/spans.json docs/tracing-trace.png
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from html import escape
from pathlib import Path
from typing import Any

WIDTH, ROW, LEFT, BAR = 1000, 130, 260, 590
SHOWN = (
    "outbox.lane",
    "messaging.batch.message_count",
    "outbox.accepted",
    "outbox.failed",
    "http.response.status_code",
    "outbox.reports",
    "outbox.linked_messages",
)


def rows(spans: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Spans grouped by trace, in the order their traces began; parents before children."""
    traces: dict[str, list[dict[str, Any]]] = {}
    for span in sorted(spans, key=lambda s: (s["start_ns"], bool(s["parent_span_id"]))):
        traces.setdefault(span["trace_id"], []).append(span)
    return list(traces.values())


def svg(spans: list[dict[str, Any]]) -> str:
    grouped = rows(spans)
    height = ROW * len(grouped) + 10
    origin = min(span["start_ns"] for span in spans)
    parts, places = [], {}
    for index, trace in enumerate(grouped):
        top = 30 + index * ROW
        start = trace[0]["start_ns"]
        length = max(span["end_ns"] for span in trace) - start
        after = (start - origin) / 1e9
        parts.append(
            f'<text x="10" y="{top + 18}" class="service">{escape(trace[0]["service"])}</text>'
            f'<text x="10" y="{top + 38}" class="meta">trace {trace[0]["trace_id"][:12]}…</text>'
            f'<text x="10" y="{top + 56}" class="meta">+{after:.2f} s after the enqueue</text>'
        )
        for depth, span in enumerate(trace):
            x = LEFT + BAR * (span["start_ns"] - start) / length
            width = max(BAR * (span["end_ns"] - span["start_ns"]) / length, 3)
            y = top + depth * 44
            milliseconds = (span["end_ns"] - span["start_ns"]) / 1e6
            label = f"{span['name']}  {milliseconds:.1f} ms"
            notes = ", ".join(
                f"{key.split('.')[-1]}={span['attributes'][key]}"
                for key in SHOWN
                if key in span["attributes"]
            )
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="26" rx="4" '
                f'class="{"child" if span["parent_span_id"] else "root"}"/>'
                f'<text x="{LEFT}" y="{y - 4}" class="name">{escape(label)}</text>'
                f'<text x="{LEFT + BAR + 10}" y="{y + 17}" class="meta">{escape(notes)}</text>'
            )
            places[span["span_id"]] = (x, y, width)
    gutter = LEFT - 14
    for span in spans:
        for link in span["links"]:
            if span["span_id"] in places and link["span_id"] in places:
                _, y1, _ = places[span["span_id"]]
                x2, y2, _ = places[link["span_id"]]
                gutter -= 10
                parts.append(
                    f'<path d="M {x2 - 2:.1f} {y1 + 13} H {gutter} V {y2 + 13} H {x2 - 4:.1f}" '
                    'class="link" marker-end="url(#arrow)"/>'
                    f'<text x="{gutter - 4}" y="{y1 + 17}" class="linktext" '
                    'text-anchor="end">link</text>'
                )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH + 200}" height="{height}">'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#b45309"/></marker>'
        "</defs>" + "".join(parts) + "</svg>"
    )


STYLE = """
body { margin: 0; background: #fff; font-family: 'DejaVu Sans', sans-serif; }
.service { font-size: 15px; font-weight: bold; fill: #111827; }
.name { font-size: 13px; fill: #111827; }
.meta { font-size: 12px; fill: #4b5563; }
.root { fill: #2563eb; } .child { fill: #60a5fa; }
.link { fill: none; stroke: #b45309; stroke-width: 1.6; stroke-dasharray: 6 4; }
.linktext { font-size: 11px; fill: #b45309; }
"""


def render(spans_file: Path, picture: Path) -> None:
    spans = json.loads(spans_file.read_text())
    drawing = svg(spans)
    page = f"<html><head><style>{STYLE}</style></head><body>{drawing}</body></html>"
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with tempfile.TemporaryDirectory() as folder:
        html = Path(folder) / "trace.html"
        html.write_text(page)
        height = ROW * len(rows(spans)) + 10
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--window-size={WIDTH + 200},{height}",
                f"--screenshot={picture.resolve()}",
                html.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


if __name__ == "__main__":
    render(Path(sys.argv[1]), Path(sys.argv[2]))
