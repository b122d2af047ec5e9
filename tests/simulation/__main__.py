"""``make simulate``: run seeds (or replay one) and print failing runs and the summary.

python -m tests.simulation --seeds 500 --db sqlite   # seeds from a random start
python -m tests.simulation --seed 1234 --db postgresql  # replay one, with its trace
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time

from tests.simulation.runner import database, run
from tests.simulation.scenarios import SCENARIOS
from tests.simulation.summary import Summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make simulate", description=__doc__)
    parser.add_argument("--seeds", type=int, default=200, help="how many random runs")
    parser.add_argument("--start", type=int, help="the first seed (default: a random one)")
    parser.add_argument("--seed", type=int, help="replay this one seed, printing its trace")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), help="run a named fault plan")
    parser.add_argument("--db", default="sqlite", help="sqlite, postgresql, or both")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # the dispatcher's batch lines would drown the report
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    failed = False
    for kind in kinds:
        with database(kind) as engine:
            if args.seed is not None or args.scenario is not None:
                plan = SCENARIOS[args.scenario] if args.scenario else None
                result = run(args.seed or 0, engine, plan, scenario=args.scenario)
                print(result.report(full=True))
                failed |= not result.clean
                continue
            start = random.randrange(1_000_000) if args.start is None else args.start
            summary = Summary()
            began = time.perf_counter()
            for seed in range(start, start + args.seeds):
                result = run(seed, engine)
                summary.add(result)
                if not result.clean:
                    print(result.report(), flush=True)
            summary.seconds = time.perf_counter() - began
            print(f"seeds {start}..{start + args.seeds - 1}")
            print("\n".join(summary.lines(kind)))
            failed |= summary.clean < summary.runs
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
