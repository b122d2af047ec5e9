"""The timing rule a worker starts under: its HTTP timeout and lease leave every request room."""

from __future__ import annotations

from datetime import timedelta

# The dispatcher's margins (tests/unit/test_settings.py holds them equal to its own): no
# request starts with less than SHORTEST_TIMEOUT to its deadline, and a lease covers, beside the
# whole request, a slot wait of up to 2 s, 1 s for the work between claim and request, and 1 s
# to record the answer.
SHORTEST_TIMEOUT = timedelta(milliseconds=500)
LEASE_HEADROOM = timedelta(seconds=4)


def timing_problem(timeout: timedelta, lease: timedelta) -> str | None:
    """Why no request, or no whole one, could be made under these settings; None if one can."""
    # As given, not rounded: 33.999999 shown as 34 would contradict the rule it breaks.
    seconds, lease_seconds = f"{timeout.total_seconds():.10g}", f"{lease.total_seconds():.10g}"
    if timeout < SHORTEST_TIMEOUT:
        return (
            f"WIRAYA_TIMEOUT_SECONDS: {seconds} is shorter than "
            f"{SHORTEST_TIMEOUT.total_seconds():g} s, the least time a request is started "
            "with: no request would ever be made"
        )
    if lease < timeout + LEASE_HEADROOM:
        return (
            f"OUTBOX_LEASE_SECONDS: {lease_seconds} must be at least WIRAYA_TIMEOUT_SECONDS "
            f"({seconds}) + {LEASE_HEADROOM.total_seconds():g} s: a lease holds a wait "
            "for the request's slot, the claim's own work, the whole request and the record "
            "of its answer; with less, requests are cut short or never made"
        )
    return None
