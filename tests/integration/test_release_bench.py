"""bench/release_publish.py runs against its own nginx and prints its ratios."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from fieldloop.layout import PROJECT_ROOT


def test_release_bench_prints_publish_and_update_ratios() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIELDLOOP_")}
    proc = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "bench" / "release_publish.py"), "--model-bytes", "5000", "--repeat", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"publish: .* ms = +[\d.]+x a plain atomic copy", proc.stdout), proc.stdout
    assert re.search(r"nothing new: .* ms, [\d,]+ B fetched \(baseline\)", proc.stdout)
    fetched = re.search(r"a new model: .* ms = +[\d.]+x, ([\d,]+) B fetched = \d+x", proc.stdout)
    assert fetched and int(fetched.group(1).replace(",", "")) > 5000  # the model file and its metadata
