"""What many runs came to: seeds clean, violations by kind, and the liveness figures per fault."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from tests.simulation.runner import RunResult


@dataclass
class Summary:
    """Runs added one by one; ``lines`` says what they came to."""

    runs: int = 0
    clean: int = 0
    seconds: float = 0.0
    violations: Counter[str] = field(default_factory=Counter)
    failing: list[str] = field(default_factory=list)  # replay commands
    drains: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    poison: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, result: RunResult) -> None:
        self.runs += 1
        if result.clean:
            self.clean += 1
        else:
            self.failing.append(result.replay())
        self.violations.update({violation.kind for violation in result.violations})
        if result.drain is not None:
            for kind in sorted(result.plan.kinds()) or ["none"]:
                self.drains[kind].append(result.drain)
        for kind, seconds in result.poison_ends.items():
            self.poison[kind].append(seconds)

    def lines(self, database: str) -> list[str]:
        rate = self.runs / self.seconds if self.seconds else 0.0
        lines = [
            f"{database}: {self.runs} runs in {self.seconds:.1f}s ({rate:.2f} runs/s), "
            f"{self.clean} seeds clean",
        ]
        if self.violations:
            kinds = ", ".join(f"{kind}: {n}" for kind, n in sorted(self.violations.items()))
            lines.append(f"  runs with violations, by kind: {kinds}")
            lines += [f"  replay: {command}" for command in self.failing[:10]]
        lines.append(
            "  API's return -> last sendable message accepted (s), by fault kind in the run:"
        )
        lines += [
            f"    {kind:<14} {_spread(values)}" for kind, values in sorted(self.drains.items())
        ]
        lines.append("  poison message's arrival -> failed (s), by kind:")
        lines += [
            f"    {kind:<14} {_spread(values)}" for kind, values in sorted(self.poison.items())
        ]
        return lines


def _spread(values: list[float]) -> str:
    return f"runs {len(values):>4}  median {statistics.median(values):6.1f}  max {max(values):6.1f}"
