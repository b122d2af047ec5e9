"""A local stand-in for Wiraya's EnqueueCommunications API: faults, test recipients, a ledger."""

from __future__ import annotations

from sandbox.faults import Faults, Validation


def main(argv: list[str] | None = None) -> int:
    """Run the sandbox from the command line (`outbox sandbox ...`); see `sandbox.cli`."""
    from sandbox.cli import main as run

    return run(argv)


__all__ = ["Faults", "Validation", "main"]
