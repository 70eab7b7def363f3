"""``fieldloop demo``: the main job on embedded defaults.

For now it brings the stack up, proves Spark writes and reads Delta in the lake, and
prints what runs where. Each stage (fleet, ingest, refine, train, rollout) adds its
step here, so the demo always shows the whole loop as far as it is built.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from fieldloop.config import FieldloopConfig
from fieldloop.contracts import load_contracts
from fieldloop.residency import ResidencyGuard


def _spark_smoke(cfg: FieldloopConfig) -> tuple[str, int, float]:
    """Write a one-row Delta table under the lake with Spark and read it back."""
    from fieldloop.spark import spark_session

    t0 = time.monotonic()
    spark = spark_session(cfg, "fieldloop-demo")
    path = f"{cfg.lake.rstrip('/')}/_smoke/spark_delta"
    spark.createDataFrame([(1, "spark+delta ok")], "id INT, note STRING").write.format("delta").mode("overwrite").save(path)
    rows = spark.read.format("delta").load(path).count()
    spark.stop()
    return path, rows, time.monotonic() - t0


def run_demo(cfg: FieldloopConfig, console: Console, progress: Callable[[str], None]) -> None:
    from fieldloop.stack import Stack

    console.rule("[bold]fieldloop demo")
    contracts = load_contracts(cfg.contracts_dir, cfg.allowed_regions)
    lake = ResidencyGuard.from_config(cfg).check(cfg.lake)
    stack = Stack(cfg)
    console.print("[bold]1. stack[/]")
    once = stack.up(progress)
    console.print("[bold]2. Spark + Delta in the lake[/]")
    with console.status("starting Spark (local) ..."):
        path, rows, seconds = _spark_smoke(cfg)
    progress(f"wrote and read {path} ({rows} row) in {seconds:.0f}s")

    table = Table(title="what runs where (all on 127.0.0.1)")
    for col in ("part", "where", "pids / detail"):
        table.add_column(col)
    for s in stack.status():
        pids = ", ".join(f"{p.name}={p.pid}" for p in s.processes)
        table.add_row(s.name, s.url, f"{pids}  [{'green' if s.health.ok else 'red'}]{s.health.detail}[/]")
    table.add_row("spark", cfg.spark.master, "started per job (jars from infra/pom.xml)")
    table.add_row("lake", cfg.lake, f"region {lake.region} ({lake.basis}); allowed: {', '.join(cfg.allowed_regions)}")
    table.add_row("state", str(cfg.home), "logs/, run/ (pids), kafka/, mlflow/, airflow/, jars/")
    console.print(table)

    topics = Table(title=f"{len(contracts)} data contracts -> topics")
    for col in ("contract", "class", "tenant", "topic"):
        topics.add_column(col)
    for c in contracts.values():
        topics.add_row(c.id, str(c.data_class), c.tenant or "-", c.topic)
    console.print(topics)
    for line in once:
        console.print(f"[bold yellow]{line}[/]")
    console.print("Next: open the Airflow UI and the MLflow UI above; `fieldloop stack down` stops everything.")
