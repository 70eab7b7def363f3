"""The agent benchmark still runs end to end (a benchmark that rots says nothing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fieldloop.layout import PROJECT_ROOT


def test_the_agent_bench_measures_updates_and_the_loop_against_its_baselines(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "bench/agent_loop.py", "--cycles", "2", "--runs", "50", "--json", str(out)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    nothing, new = figures["update_nothing_new"], figures["update_new_model"]
    assert 0 < nothing["bytes"] < 2048  # the timestamp alone
    assert new["bytes"] > figures["model_bytes"] and new["bytes_ratio"] > 1
    assert figures["inference_agent"]["p99_ratio"] > 0
    assert "update check, nothing new (baseline)" in proc.stdout
