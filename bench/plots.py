"""Plots of a `bench.engine` ``--json`` report, for docs/performance.md.

Run as ``python -m bench.plots REPORT.json [--out docs/images]`` from the repository root.
matplotlib is not a hostedjobs dependency: when it cannot be imported, this module creates
(on first use) the virtualenv ``bench/.peers/plots`` with a pinned matplotlib and re-runs
itself under that venv's interpreter. Writes ``bench-throughput.png`` (single and bulk
enqueue rate, one-process drain rate), ``bench-pickup.png`` (pickup latency p50 and p99) and,
when the report has a scale-out run, ``bench-scale-out.png`` (drain rate by worker processes),
each bar a median with a (min–max) whisker over the benchmark's rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "bench" / ".peers" / "plots"
REQUIREMENTS = ("matplotlib==3.11.2",)
COLOURS = ("#1b6ac9", "#8c8c8c", "#e0912f", "#4aa564", "#b65fc2", "#c94f4f")
KNOWN_COLOURS = {
    "hostedjobs": "#1b6ac9",
    "hostedjobs+uvloop": "#72a7e8",
    "arq poll=0.01": "#8c8c8c",
    "arq poll=0.5": "#c94f4f",
    "SAQ": "#e0912f",
    "taskiq": "#4aa564",
    "streaq": "#b65fc2",
    "docket": "#2a9d9d",
}
"""Each system keeps its colour whichever systems a run has."""


def _reexec_in_venv(argv: list[str]) -> None:
    """Run this module again under ``bench/.peers/plots``, creating it if needed."""
    python = VENV / "bin" / "python"
    marker = VENV / "bench-requirements.txt"
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if Path(sys.prefix).resolve() == VENV.resolve():
        raise SystemExit(f"matplotlib is missing from {VENV}; delete it and re-run")
    if not (python.exists() and marker.exists() and marker.read_text() == wanted):
        print(f"creating {VENV.relative_to(ROOT)} with {' '.join(REQUIREMENTS)}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *REQUIREMENTS], check=True)
        marker.write_text(wanted)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    os.execve(str(python), [str(python), "-m", "bench.plots", *argv], env)


def _series(report: dict[str, Any], metric: str) -> list[tuple[str, float, float, float]]:
    """(system, median, min, max) of ``metric`` for each system that has it."""
    rows = []
    for system in report["systems"]:
        value = report["metrics"][metric][system]
        if value is not None:
            rows.append((system, value["median"], value["min"], value["max"]))
    return rows


def _bars(axis: Any, rows: list[tuple[str, float, float, float]], colours: dict[str, str]) -> None:
    labels = [r[0] for r in rows]
    medians = [r[1] for r in rows]
    below = [r[1] - r[2] for r in rows]
    above = [r[3] - r[1] for r in rows]
    positions = range(len(rows))
    axis.bar(
        positions,
        medians,
        yerr=[below, above],
        capsize=3,
        color=[colours[label] for label in labels],
    )
    axis.set_xticks(list(positions), labels, rotation=30, ha="right")
    for x, value in zip(positions, medians, strict=True):
        axis.annotate(
            f"{value:,.0f}",
            (x, value),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 2),
            textcoords="offset points",
        )
    axis.grid(axis="y", alpha=0.3)


def plot(report: dict[str, Any], out: Path) -> list[Path]:
    """Write the two PNGs into ``out``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {
        s: KNOWN_COLOURS.get(s, COLOURS[i % len(COLOURS)]) for i, s in enumerate(report["systems"])
    }
    rounds = report["config"]["rounds"]
    out.mkdir(parents=True, exist_ok=True)

    panels = (
        ("enqueue rate (jobs/s)", "single enqueue, jobs/s"),
        ("bulk enqueue (jobs/s)", "bulk enqueue, jobs/s"),
        ("drain, 1 process (jobs/s)", "no-op drain, 1 process, jobs/s"),
    )
    figure, axes = plt.subplots(1, len(panels), figsize=(12, 4.2))
    for axis, (metric, title) in zip(axes, panels, strict=True):
        _bars(axis, _series(report, metric), colours)
        axis.set_title(title, fontsize=10)
    figure.suptitle(
        f"Throughput (higher is better; median of {rounds} round(s), whiskers min–max)", fontsize=11
    )
    figure.tight_layout()
    throughput = out / "bench-throughput.png"
    figure.savefig(throughput, dpi=110)
    plt.close(figure)

    p50 = _series(report, "pickup p50 (ms)")
    p99 = {r[0]: r for r in _series(report, "pickup p99 (ms)")}
    figure, axis = plt.subplots(figsize=(8, 4.2))
    width = 0.38
    for offset, rows, name in (
        (-width / 2, p50, "p50"),
        (width / 2, [p99[r[0]] for r in p50], "p99"),
    ):
        xs = [i + offset for i in range(len(rows))]
        axis.bar(
            xs,
            [r[1] for r in rows],
            width,
            yerr=[[r[1] - r[2] for r in rows], [r[3] - r[1] for r in rows]],
            capsize=3,
            label=name,
            color=[colours[r[0]] for r in rows],
            alpha=1.0 if name == "p50" else 0.55,
            edgecolor="black",
            linewidth=0.5,
        )
        for x, r in zip(xs, rows, strict=True):
            axis.annotate(
                f"{r[1]:.1f}",
                (x, r[1]),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 2),
                textcoords="offset points",
            )
    axis.set_xticks(range(len(p50)), [r[0] for r in p50])
    axis.set_ylabel("enqueue → handler start, ms")
    axis.set_title(
        "Pickup latency of an idle worker, p50 (solid) and p99 (light); lower is better\n"
        f"median of {rounds} round(s), whiskers min–max",
        fontsize=10,
    )
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    pickup = out / "bench-pickup.png"
    figure.savefig(pickup, dpi=110)
    plt.close(figure)
    written = [throughput, pickup]
    if report.get("scale_out"):
        written.append(_scale_out(plt, report, colours, out))
    return written


def _scale_out(plt: Any, report: dict[str, Any], colours: dict[str, str], out: Path) -> Path:
    """Grouped bars: drain rate per worker process count, one bar per system."""
    scale: dict[str, dict[str, dict[str, Any]]] = report["scale_out"]
    counts = sorted({int(p) for by_count in scale.values() for p in by_count})
    figure, axis = plt.subplots(figsize=(8, 4.2))
    width = 0.8 / len(scale)
    for index, (system, by_count) in enumerate(scale.items()):
        xs, rows = [], []
        for position, processes in enumerate(counts):
            value = by_count.get(str(processes))
            if value is not None:
                xs.append(position - 0.4 + width * (index + 0.5))
                rows.append(value)
        axis.bar(
            xs,
            [r["median"] for r in rows],
            width,
            yerr=[[r["median"] - r["min"] for r in rows], [r["max"] - r["median"] for r in rows]],
            capsize=3,
            label=system,
            color=colours.get(system, COLOURS[index % len(COLOURS)]),
        )
        for x, r in zip(xs, rows, strict=True):
            axis.annotate(
                f"{r['median']:,.0f}",
                (x, r["median"]),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 2),
                textcoords="offset points",
            )
    axis.set_xticks(range(len(counts)), [f"{p} process{'es' if p > 1 else ''}" for p in counts])
    axis.set_ylabel("no-op jobs/s, all processes")
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    jobs = report["config"].get("scale_jobs")
    axis.set_title(
        f"Scale-out: {jobs:,} no-op jobs drained by several worker processes (32 slots each)\n"
        f"higher is better; median of {report['config']['rounds']} round(s), whiskers min–max",
        fontsize=10,
    )
    figure.tight_layout()
    path = out / "bench-scale-out.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m bench.plots``."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench.plots", description=__doc__)
    parser.add_argument("report", type=Path, help="the JSON written by bench.engine --json")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        _reexec_in_venv(argv)
    report = json.loads(args.report.read_text())
    for path in plot(report, args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
