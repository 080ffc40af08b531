"""Run the test suite beside CPU hogs, as on a loaded machine: ``python -m tests.loaded``.

``make test-loaded`` runs it. The suite must pass like this: tests wait for conditions with
generous deadlines instead of sleeping a fixed time or asserting on elapsed time. Options
before the pytest arguments: ``--hogs N`` busy-loop processes (default: twice the CPU count,
at least 2); every other argument goes to pytest. The hogs are killed when pytest ends.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from types import FrameType

_HOG = "while True: pass"


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.loaded", description=__doc__)
    parser.add_argument(
        "--hogs",
        type=int,
        default=max(2, 2 * (os.cpu_count() or 1)),
        help="how many busy-loop processes run beside the suite",
    )
    args, pytest_args = parser.parse_known_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    hogs = [
        subprocess.Popen(
            [sys.executable, "-c", _HOG],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(args.hogs)
    ]
    started = time.monotonic()
    code = 1
    try:
        print(f"tests.loaded: {args.hogs} CPU hog(s) running beside pytest", flush=True)
        code = subprocess.call([sys.executable, "-m", "pytest", *pytest_args])
    finally:
        load = os.getloadavg()
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()
        print(
            f"tests.loaded: pytest exited {code} after {time.monotonic() - started:.0f}s with "
            f"{args.hogs} hog(s); load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}",
            flush=True,
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
