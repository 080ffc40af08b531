"""``python -m tests.chaos [--long] [SCENARIO ...]``: run the chaos scenarios, print the table.

Exits 1 if any scenario broke a guarantee (a lost job, an unexplained duplicate, a double
tick, or a scenario's own check); the lines under the table say which and why. Each run's
Redis, worker logs and ledger stay in a directory printed first.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import traceback
from pathlib import Path

from tests.chaos.ledger import Report, table
from tests.chaos.scenarios import SCENARIOS, run_scenario


async def _run_all(names: list[str], directory: Path, long: bool) -> list[Report]:
    reports = []
    for name in names:
        scenario = SCENARIOS[name]
        print(f"running {name}: {scenario.what}", file=sys.stderr, flush=True)
        try:
            report = await run_scenario(scenario, directory / name, long=long)
        except Exception:
            report = Report(name, problems=[f"the scenario crashed:\n{traceback.format_exc()}"])
        print(report.describe() + "\n", file=sys.stderr, flush=True)
        reports.append(report)
    return reports


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--long", action="store_true", help="the long mode (about 15 minutes)")
    parser.add_argument("scenarios", nargs="*", help=f"default: all ({', '.join(SCENARIOS)})")
    args = parser.parse_args(argv)
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    directory = Path(tempfile.mkdtemp(prefix="hostedjobs-chaos-"))
    print(f"processes' files in {directory}", file=sys.stderr)
    reports = asyncio.run(_run_all(args.scenarios or list(SCENARIOS), directory, args.long))
    print(table(reports))
    failed = [(r.scenario, failure) for r in reports for failure in r.failures()]
    for scenario, failure in failed:
        print(f"- {scenario}: {failure}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
