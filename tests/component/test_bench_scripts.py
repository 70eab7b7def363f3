"""The benchmarks that need no broker still run end to end.

Nothing here looks at a timing (CI never asserts wall-clock figures); it keeps the scripts
from rotting when the code they measure changes, which is how a benchmark quietly stops
measuring what its README says.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.component

ROOT = Path(__file__).resolve().parents[2]


def test_edge_latency_bench_runs_every_variant(tmp_path: Path) -> None:
    out = tmp_path / "edge.json"
    proc = subprocess.run(
        [
            sys.executable,
            "bench/edge_latency.py",
            "--devices",
            "4",
            "--frames",
            "40",
            "--epochs",
            "1",
            "--runs",
            "50",
            "--warmup",
            "10",
            "--latency-rows",
            "20",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    report = json.loads(out.read_text())
    assert [t["task"] for t in report["tasks"]] == ["vehicle-longitudinal", "plant-anomaly"]
    for task in report["tasks"]:
        assert len(task["variants"]) == 4, task["variants"]


def test_refine_bench_runs_with_its_breakdown() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "bench/refine_throughput.py",
            "--rows",
            "3000",
            "--devices",
            "12",
            "--repeat",
            "1",
            "--increment-seconds",
            "20",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "SilverJob acme-mobility" in proc.stdout and "target: ratio <= 1.5" in proc.stdout
    assert "small increment: the demo fleet's 20 s" in proc.stdout and "warm, best run" in proc.stdout


def test_loop_closure_bench_reads_a_demo_summary_and_prints_ratios_to_target_and_first_iteration(
    tmp_path: Path,
) -> None:
    summary = {
        "iterations": [
            {"number": 1, "loop_closure_s": 300.0, "closure_stages": {"bronze": 100.0, "rollout": 200.0}},
            {"number": 2, "loop_closure_s": 240.0, "closure_stages": {"field": 60.0, "refine": 180.0}},
        ]
    }
    (tmp_path / "demo.json").write_text(json.dumps(summary))
    proc = subprocess.run(
        [sys.executable, "bench/loop_closure.py", "--summary", str(tmp_path / "demo.json"), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    first, second = json.loads(proc.stdout)["iterations"]
    assert (first["vs_target"], first["largest_stage"]) == (0.5, "rollout")
    assert (second["vs_target"], second["vs_first_iteration"], second["largest_stage"]) == (0.4, 0.8, "refine")
    summary["iterations"][1]["loop_closure_s"] = None  # an iteration whose model never reached a canary
    (tmp_path / "demo.json").write_text(json.dumps(summary))
    proc = subprocess.run(
        [sys.executable, "bench/loop_closure.py", "--summary", str(tmp_path / "demo.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "iteration 2: no approved model reached a canary car" in proc.stdout
