"""Loop closure: from an iteration's first field record to its approved model acting on a canary car.

The loop is what ``fieldloop demo --iterations N`` runs (fleet -> bronze -> silver/gold ->
train -> guardrails -> signed release -> staged rollout, then the cars' hard cases -> bronze ->
gold -> fine-tune -> guardrails -> rollout), so this bench runs it and reads the timings it
records (``iterations`` of its ``--json`` summary, :mod:`fieldloop.cli.demo_loop`):

* the first iteration starts with the fleet's first record;
* each later one with the first hard case a car spooled (while the iteration before ran), so
  its figure includes the wait for the field as well as the cloud's work;
* each ends when a car of the canary cohort first activates the approved version.

Printed per iteration: the closure, its ratio to the 10-minute target, each stage's seconds
and share, the largest stage; and the ratio of each later iteration to the first, measured in
the same run (the baseline: how much of the first loop's cost the second one pays again).

By default the demo runs in a fresh temporary home on the ports the environment gives
(``FIELDLOOP_*_PORT``), with its stack stopped afterwards; ``--summary FILE`` reads a summary a
demo already wrote instead (``fieldloop demo --json > FILE``).

    .venv/bin/python bench/loop_closure.py --iterations 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_S = 600.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=2, help="times round the loop (at least 2 for a ratio)")
    parser.add_argument("--summary", type=Path, help="read this demo --json summary instead of running the demo")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    summary = json.loads(args.summary.read_text()) if args.summary else run_demo(args.iterations)
    figures = closure_figures(summary)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(report(figures))
    return 0 if figures["iterations"] and all(it["loop_closure_s"] for it in figures["iterations"]) else 1


def run_demo(iterations: int) -> dict[str, Any]:
    """``fieldloop demo --iterations N --json`` in a fresh home; its summary (the stack stopped after)."""
    fieldloop = str(Path(sys.executable).parent / "fieldloop")
    with tempfile.TemporaryDirectory(prefix="fieldloop-bench-loop-") as home:
        env = {**os.environ, "FIELDLOOP_HOME": home}
        jars = Path.home() / ".fieldloop" / "jars"
        if jars.is_dir():  # the JVM jars resolved once per machine (infra/pom.xml), not per home
            os.symlink(jars, Path(home) / "jars")
        t0 = time.monotonic()
        try:
            proc = subprocess.run(
                [fieldloop, "demo", "--iterations", str(iterations), "--json"], env=env, capture_output=True, text=True
            )
        finally:
            subprocess.run([fieldloop, "stack", "down"], env=env, capture_output=True)
        if proc.returncode != 0:
            raise SystemExit(f"the demo failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        print(f"demo: {time.monotonic() - t0:.0f} s wall, {iterations} iterations", file=sys.stderr)
        return json.loads(proc.stdout)


def closure_figures(summary: dict[str, Any]) -> dict[str, Any]:
    """The loop-closure figures of a demo summary, with the ratios (see the module docstring)."""
    rows = []
    first = None
    for it in summary.get("iterations", []):
        closure = it.get("loop_closure_s")
        stages = it.get("closure_stages", {})
        largest = max(stages, key=lambda k: stages[k]) if stages else None
        if first is None:
            first = closure
        rows.append(
            {
                "number": it["number"],
                "loop_closure_s": closure,
                "vs_target": round(closure / TARGET_S, 2) if closure else None,
                "vs_first_iteration": round(closure / first, 2) if closure and first else None,
                "closure_stages": stages,
                "largest_stage": largest,
                "stages": it.get("stages", {}),
            }
        )
    return {"target_s": TARGET_S, "iterations": rows}


def report(figures: dict[str, Any]) -> str:
    lines = []
    for it in figures["iterations"]:
        closure = it["loop_closure_s"]
        if not closure:
            lines.append(f"iteration {it['number']}: no approved model reached a canary car (no closure)")
            continue
        lines.append(
            f"iteration {it['number']}: loop closure {closure:.0f} s ({closure / 60:.1f} min) = "
            f"{it['vs_target']:.2f} x the 10-min target, {it['vs_first_iteration']:.2f} x iteration 1"
        )
        for name, seconds in it["closure_stages"].items():
            lines.append(f"  {name:<62} {seconds:6.0f} s  {seconds / closure:5.0%}")
        lines.append(f"  largest: {it['largest_stage']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
