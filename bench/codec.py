"""The payload codec alone: µs per payload to encode and decode one job, this tree and others.

Run ``python -m bench.codec`` for this tree, ``python -m bench.codec --baseline REV`` (repeatable)
to measure hostedjobs as it was at git revision REV on the same payload in the same run. REV's
``hostedjobs`` is laid out with ``git archive`` in a temporary folder and this file is run as a
script there (``--measure``), so it imports REV's code; the payload is the dataclass below, which
every revision can encode.

Two payloads: ``order``, a typical job (`Order`: ids, times, money, ten nested lines) and
``small``, the engine benchmark's no-op job (`Small`: an int and two floats). Two figures for
each, the best of ``--repeat`` runs of ``--number`` calls:

- ``payload``: `encode_payload` + `decode_payload` of one job (the codec's work);
- ``record``: the same plus the arq record around it, as an enqueue and a worker do it:
  ``job_record`` of the payload, then ``read_record`` of those bytes and `decode_payload`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import timeit
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import BytesIO
from pathlib import Path
from typing import Any

__all__ = ["Line", "Order", "Small", "main", "measure"]

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Line:
    """One order line."""

    sku: str
    quantity: int
    price: Decimal
    tags: list[str] = field(default_factory=list)


@dataclass
class Order:
    """A typical job: ids, times, money, a nested list of dataclasses, an optional field."""

    order_id: uuid.UUID
    customer: str
    placed_at: datetime
    deliver_within: timedelta
    lines: list[Line]
    total: float
    note: str | None = None
    attributes: dict[str, int] = field(default_factory=dict)


@dataclass
class Small:
    """The shape of the engine benchmark's job (``bench.hosted_worker.BenchJob``)."""

    seq: int
    sent_at: float = 0.0
    sleep_s: float = 0.0


def _order() -> Order:
    return Order(
        order_id=uuid.UUID(int=42),
        customer="ada@example.com",
        placed_at=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        deliver_within=timedelta(days=2, hours=3),
        lines=[
            Line(f"SKU-{i:04}", i + 1, Decimal(f"{i}.99"), ["gift"] if i % 2 else [])
            for i in range(10)
        ],
        total=123.45,
        note="leave at the door",
        attributes={"priority": 2, "warehouse": 7},
    )


def measure(number: int, repeat: int) -> dict[str, Any]:
    """µs per payload of the ``hostedjobs`` this process imports (see the module docstring)."""
    import hostedjobs
    from hostedjobs.serialization import decode_payload, encode_payload, job_record, read_record

    result: dict[str, Any] = {"hostedjobs": str(Path(hostedjobs.__file__).parent)}
    for name, job in (("order", _order()), ("small", Small(seq=7))):
        cls = type(job)

        def payload(cls: type[Any] = cls, job: Any = job) -> None:
            decode_payload(cls, encode_payload(job))

        def record(cls: type[Any] = cls, job: Any = job) -> None:
            data = job_record("bench.codec@1", encode_payload(job), 1_700_000_000_000)
            decode_payload(cls, read_record(data)["a"][0])

        assert decode_payload(cls, encode_payload(job)) == job
        best = min(timeit.repeat(payload, number=number, repeat=repeat))
        result[f"{name}_payload_us"] = best / number * 1e6
        best = min(timeit.repeat(record, number=number, repeat=repeat))
        result[f"{name}_record_us"] = best / number * 1e6
    return result


def _measure_at(rev: str, number: int, repeat: int) -> dict[str, Any]:
    archive = subprocess.run(
        ["git", "archive", rev, "hostedjobs"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tempfile.TemporaryDirectory(prefix="codec-baseline-") as folder:
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(folder, filter="data")
        env = {**os.environ, "PYTHONPATH": folder}
        out = subprocess.run(
            [sys.executable, __file__, "--measure", f"--number={number}", f"--repeat={repeat}"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    if not result["hostedjobs"].startswith(folder):
        raise RuntimeError(f"the baseline run imported {result['hostedjobs']}, not {rev}'s code")
    return result


def main(argv: list[str] | None = None) -> None:
    """Print µs per payload for this tree and each ``--baseline`` revision."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", action="append", default=[], metavar="REV")
    parser.add_argument("--number", type=int, default=2000, help="calls per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best is shown")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.number, args.repeat)))
        return
    rows = [("this tree", measure(args.number, args.repeat))]
    rows += [(rev, _measure_at(rev, args.number, args.repeat)) for rev in args.baseline]
    print(f"{'tree':<14} {'payload':<8} {'encode+decode µs':>17} {'with the record µs':>19}")
    for name, row in rows:
        for payload in ("order", "small"):
            print(
                f"{name:<14} {payload:<8} {row[f'{payload}_payload_us']:>17.1f} "
                f"{row[f'{payload}_record_us']:>19.1f}"
            )


if __name__ == "__main__":
    main()
