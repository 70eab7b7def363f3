"""Bronze -> silver: refinement time and rows/s, against a plain Delta copy of the same rows in the same run.

Bronze: for ``vehicle-frames-acme-mobility`` (one pseudonymized output) and
``vehicle-frames-public`` (a pseudonymized and an anonymized output), a real bronze table
is first written by ``BronzeJob.process_batch`` from a few seconds of simulated fleet (so
schema, table properties and change data feed are the bronze job's own); then ``--rows``
generated frames are appended to each in ONE Delta commit, so a refinement run reads
them through the change feed as one batch. The frames: ``--devices`` vehicles with VINs
and driver ids like the simulator's, 5 Hz, ``ts`` and ``_seq`` increasing per device,
GPS circling around Tokyo, values inside the policy's quality ranges, and a driver note
(from ``ingestion.simulator.notes``) on one frame in 75 (one every 15 s per vehicle).

Measured in one process, same session, same data, best of ``--repeat`` timed runs, each
measurement after ``--warmup`` untimed ones (the runs of every measurement are printed);
beside the ratio of best runs, the ratio of median runs, which one lucky run moves less.
The copy and the job it is compared with run turn about, a copy then a job, so a burst of
other work on the machine slows both rather than one of them.
The JVM compiles the code paths of a job over its first runs: the refinement's first
run took twice its fifth, the copy's first 1.2 times its fifth. Without the warm-up the
ratio measures how much more code the job runs before the JIT has compiled it, not its
throughput. A fresh process (``fieldloop refine``, an Airflow task) pays the first run's
price; ``--warmup 0`` shows it.

* baseline: ``spark.read.format("delta").load(bronze).write.format("delta").save(tmp)`` of
  the appended rows, the I/O floor of moving them;
* ``SilverJob.run`` per contract on fresh silver tables, from after the seed commit, so it
  reads the appended rows through the change feed as every run but a table's first does;
  the public contract writes two tables, so it is compared to 2x the copy as well as to 1x;
* a breakdown: each stage of the job alone on the same persisted, quality-checked rows,
  forced with Spark's ``noop`` sink (no output I/O), so the figures say where the time goes.

Python workers load the NER model in a warm-up pass before anything is timed.

Usage: .venv/bin/python bench/refine_throughput.py [--rows 1000000] [--devices 300] [--repeat 1] [--warmup 2]
Needs no running service; writes under a temp lake, removed at the end.
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from fieldloop.config import load_config
from fieldloop.contracts import load_contracts
from fieldloop.keys import load_key_ring
from fieldloop.residency import ResidencyGuard
from fieldloop.spark import spark_session
from fieldloop.wire import H_CLASS, H_CONTRACT, H_DEVICE, H_SEQ, H_TENANT, default_registry
from ingestion.cloud.bronze import BronzeJob
from ingestion.simulator import FleetSpec, MemoryRawSender, MemorySink, Simulation
from ingestion.simulator.layout import default_layout
from ingestion.simulator.notes import note
from ingestion.simulator.vehicle import M_PER_DEG_LAT
from ingestion.simulator.vin import make_vin
from refinement import anonymize, quality
from refinement.policy import default_policies
from refinement.pseudonym import pseudonymize
from refinement.silver import ROW_KEY, SilverJob
from refinement.text import ScrubberConfig, scrub_column

# the shipped fleet file's two vehicle frame contracts (ingestion/simulator/fleet.toml), and its cities
VEHICLES_ACME, VEHICLES_PUBLIC = "vehicle-frames-acme-mobility", "vehicle-frames-public"
CITIES = default_layout().vehicle.cities
RATE_HZ = 5
FIRST_OFFSET = 1_000_000_000  # generated rows' Kafka offsets start here, past the seed's
KAFKA_SOURCE_SCHEMA = (
    "topic STRING, partition INT, offset LONG, timestamp TIMESTAMP, key BINARY, value BINARY, "
    "headers ARRAY<STRUCT<key: STRING, value: BINARY>>"
)
NOTE_EVERY = 75  # frames: a note every 15 s per vehicle at 5 Hz
# 09:05 JST 30 days ago: a run of under an hour stays in one hour bucket, and every contract's
# retention keeps it (a fixed 2025 date fell past ACME's 365 days: silver read 1M rows as
# expired and wrote none, and the bench timed nothing).
START = (datetime.now(UTC) - timedelta(days=30)).replace(hour=0, minute=5, second=0, microsecond=0)


# bronze ------------------------------------------------------------------------------------
def seed_bronze(spark, cfg, contracts) -> int:
    """Real bronze tables (schema, properties, change feed) from a few seconds of simulated fleet.

    As ``tests/component/conftest.py`` does: the simulator sends through the in-memory sink,
    each record becomes a row shaped like Spark's Kafka source, and the bronze job's own
    ``process_batch`` writes them.
    """
    registry = default_registry()
    sink = MemorySink(contracts, registry)
    Simulation(FleetSpec(devices=10, seconds=2, rate_hz=RATE_HZ, seed=7), [], contracts, registry).run(
        sink, MemoryRawSender()
    )
    job = BronzeJob(cfg, spark, contracts, registry, ResidencyGuard.from_config(cfg))
    # what the stream reads: a stream this lake may not hold (Osaka-only robots) stays in Kafka
    read = [s for s in sink.sent if contracts[s.contract_id].topic in job.by_topic]
    rows = kafka_source_rows(read, contracts)
    job.process_batch(spark.createDataFrame(rows, KAFKA_SOURCE_SCHEMA), 0)
    return 1  # the seed commit's version (0 creates the table)


def device_table(spark, contract_id: str, devices: int, seed: int):
    """One row per vehicle: VIN, driver, the circle it drives around Tokyo, base speed, clock phase."""
    rng = np.random.default_rng(seed)
    acme = contract_id == VEHICLES_ACME
    lat0, lon0 = CITIES["tokyo"]
    rows = []
    for d in range(devices):
        wmi = "JTF" if acme else ("JTD", "JN1", "JHM", "JM1", "JF1")[int(rng.integers(5))]
        r, bearing = rng.uniform(0, 6000), rng.uniform(0, 2 * math.pi)
        rows.append(
            (
                d,
                make_vin(rng, wmi),
                f"{'am-' if acme else ''}drv-{int(rng.integers(10_000, 100_000))}",
                lat0 + r * math.cos(bearing) / M_PER_DEG_LAT,
                lon0 + r * math.sin(bearing) / (M_PER_DEG_LAT * math.cos(math.radians(lat0))),
                float(rng.uniform(500, 4000)),
                float(rng.uniform(0, 2 * math.pi)),
                float(rng.uniform(6, 14)),
                int(rng.integers(1000 // RATE_HZ)),
            )
        )
    return spark.createDataFrame(
        rows,
        "dev LONG, vin STRING, driver_id STRING, clat DOUBLE, clon DOUBLE, "
        "radius DOUBLE, theta0 DOUBLE, v0 DOUBLE, phase_ms LONG",
    )


def append_frames(spark, bronze: str, contract, rows: int, devices: int, seed: int) -> int:
    """Append ``rows`` generated frames to ``bronze`` in one commit; returns how many carry a note."""
    from pyspark.sql import functions as F

    rng = random.Random(seed)
    pool = []
    while len(pool) < max(1000, rows // NOTE_EVERY):
        text = note(rng)
        if text is not None:
            pool.append((len(pool), text))
    notes = spark.createDataFrame(pool, "note_idx LONG, driver_note STRING")
    fleet = device_table(spark, contract.id, devices, seed)

    k = F.floor(F.col("id") / devices).cast("long")  # tick: devices report in turn
    t_s = F.col("k") * (1.0 / RATE_HZ)
    wave = F.col("theta0") + t_s / 23
    speed = F.greatest(F.lit(0.0), F.col("v0") + 4 * F.sin(wave))
    accel = F.least(F.greatest(4 / 23 * F.cos(wave) + 0.1 * F.randn(seed + 1), F.lit(-6.0)), F.lit(3.0))
    theta = F.col("theta0") + F.col("v0") * t_s / F.col("radius")
    noise = 2.5 / M_PER_DEG_LAT
    headers = [
        F.lit(H_CLASS),
        F.lit(str(contract.data_class)),
        F.lit(H_CONTRACT),
        F.lit(contract.id),
        F.lit(H_DEVICE),
        F.col("vin"),
        F.lit(H_SEQ),
        F.col("_seq").cast("string"),
    ]
    if contract.tenant:
        headers += [F.lit(H_TENANT), F.lit(contract.tenant)]
    frames = (
        spark.range(0, rows, 1, 4)
        .withColumn("dev", F.col("id") % devices)
        .withColumn("k", k)
        .join(F.broadcast(fleet), "dev")
        .withColumn("note_idx", F.when((F.col("k") + F.col("dev")) % NOTE_EVERY == 0, (F.col("id") * 7919) % len(pool)))
        .join(F.broadcast(notes), "note_idx", "left")
        .withColumn("_seq", F.col("k") + 1)
        .withColumn(
            "ts",
            F.timestamp_millis(
                F.lit(int(START.timestamp() * 1000)) + F.col("k") * (1000 // RATE_HZ) + F.col("phase_ms")
            ),
        )
        .withColumn("accel_mps2", F.round(accel, 3))
        .select(
            "vin",
            "driver_id",
            "ts",
            F.round(
                F.col("clat") + F.col("radius") * F.cos(theta) / M_PER_DEG_LAT + noise * F.randn(seed + 2), 7
            ).alias("lat"),
            F.round(
                F.col("clon")
                + F.col("radius") * F.sin(theta) / (M_PER_DEG_LAT * F.cos(F.radians("clat")))
                + noise * F.randn(seed + 3),
                7,
            ).alias("lon"),
            F.round(speed, 3).alias("speed_mps"),
            "accel_mps2",
            F.round(F.degrees(F.atan(2.7 / F.col("radius"))) * 15 + 0.3 * F.randn(seed + 4), 2).alias("steering_deg"),
            F.round(
                F.when(
                    F.col("accel_mps2") < -0.2, F.least(F.lit(1.0), 0.05 - F.col("accel_mps2") / 6 * 0.95)
                ).otherwise(F.when(speed == 0, 0.3).otherwise(0.0)),
                3,
            ).alias("brake"),
            F.round(F.degrees(speed / F.col("radius")) + 0.05 * F.randn(seed + 5), 3).alias("yaw_rate_dps"),
            F.struct(
                F.floor(F.rand(seed + 6) * 12).cast("int").alias("vehicles"),
                F.floor(F.rand(seed + 7) * 8).cast("int").alias("pedestrians"),
                F.floor(F.rand(seed + 8) * 3).cast("int").alias("cyclists"),
            ).alias("perception"),
            (F.rand(seed + 9) < 0.002).alias("intervention"),
            "driver_note",
            F.col("vin").alias("_device_id"),
            "_seq",
            F.lit(contract.topic).alias("_kafka_topic"),
            (F.col("dev") % 3).cast("int").alias("_kafka_partition"),
            (F.col("id") + FIRST_OFFSET).alias("_kafka_offset"),
            (F.col("ts") + F.expr("INTERVAL 50 MILLISECONDS")).alias("_kafka_timestamp"),
            F.create_map(*headers).alias("_headers"),
            F.lit(2).alias("_schema_version"),
            F.current_timestamp().alias("_ingested_at"),
        )
    )
    target = spark.read.format("delta").load(bronze).schema
    frames = frames.select(*[F.col(f.name).cast(f.dataType) for f in target.fields])
    frames.write.format("delta").mode("append").save(bronze)
    appended = spark.read.format("delta").load(bronze).where(f"_kafka_offset >= {FIRST_OFFSET}")
    return appended.where("driver_note IS NOT NULL").count()


# timing ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timing:
    """The timed runs of one measurement (s); the fastest counts."""

    runs: tuple[float, ...]

    @property
    def best(self) -> float:
        return min(self.runs)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)


def timed(repeat: int, run: Callable[[], Any], before: Callable[[], None] | None = None, warmup: int = 0) -> Timing:
    """``warmup`` untimed runs, then ``repeat`` timed ones; ``before`` resets state outside the timed part."""
    times = []
    for i in range(warmup + repeat):
        if before:
            before()
        t0 = time.perf_counter()
        run()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return Timing(tuple(times))


def alternating(
    repeat: int,
    baseline: Callable[[], Any],
    run: Callable[[], Any],
    before: Callable[[], None] | None = None,
    warmup: int = 0,
) -> tuple[Timing, Timing]:
    """``baseline`` and ``run`` turn about, ``warmup`` untimed rounds then ``repeat`` timed ones.

    On a shared machine a burst of other work slows whichever runs it falls in: timed one
    series after the other, the copy's runs once spread 4.1-6.7 s in one process while the
    job's did not, and the ratio measured the burst. Turn about, both meet the same load.
    ``before`` resets the job's state outside the timed part.
    """
    floor, job = [], []
    for _ in range(warmup + repeat):
        floor += timed(1, baseline).runs
        job += timed(1, run, before=before).runs
    return Timing(tuple(floor[warmup:])), Timing(tuple(job[warmup:]))


def force(df) -> None:
    """Evaluate ``df`` completely without writing it anywhere."""
    df.write.format("noop").mode("overwrite").save()


def warm_scrubber(spark, config: ScrubberConfig | None = None) -> None:
    """Have both Python workers load the scrubber for ``config`` before anything is timed."""
    warm = spark.createDataFrame([(n, "佐藤さんに電話。") for n in range(64)], "n INT, driver_note STRING")
    force(scrub_column(warm.repartition(2), "driver_note", config=config))


def spark_jobs(spark, run: Callable[[], Any]) -> int:
    """How many Spark jobs ``run`` starts, in any thread.

    Counted as the new ids among jobs with no job group: a group is a thread's local
    property, which the threads refine starts do not inherit (a group set here saw 0 jobs).
    """
    tracker = spark.sparkContext.statusTracker()
    before = set(tracker.getJobIdsForGroup(None))
    run()
    return len(set(tracker.getJobIdsForGroup(None)) - before)


def row(label: str, timing: Timing, rows: int, floor: Timing | None, times: int = 1) -> str:
    """One line: best time, rows/s, and against ``times`` x ``floor`` the ratio of bests and of medians.

    The ratio of bests is the headline; the ratio of medians shows how far one fast run
    of the baseline moved it (a copy's best run was once 15 % below its other four).
    """
    seconds = timing.best
    ratios = (
        f"{seconds / (times * floor.best):>8.2f}{timing.median / (times * floor.median):>8.2f}"
        if floor
        else f"{'':>16}"
    )
    return f"{label:<64}{seconds:>9.1f}{rows / seconds:>12,.0f}{ratios}   {' '.join(f'{t:.1f}' for t in timing.runs)}"


# main --------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="generated frames per bronze table")
    parser.add_argument("--devices", type=int, default=300, help="vehicles per bronze table")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per measurement; the fastest counts")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs before each measurement's timed ones")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the per-stage breakdown")
    parser.add_argument(
        "--increment-seconds",
        type=float,
        default=300.0,
        help="the small increment: this long of the demo fleet (24 devices; `fieldloop demo` sends 300 s); 0 skips it",
    )
    args = parser.parse_args()

    base = load_config()
    tmp = Path(tempfile.mkdtemp(prefix="fieldloop-bench-"))
    cfg = load_config(
        {
            "FIELDLOOP_HOME": str(base.home),
            "FIELDLOOP_LAKE_URI": str(tmp / "lake"),
            "FIELDLOOP_REFINE_KEY_SOURCE": f"file:{tmp / 'keys.json'}",
        }
    )
    contracts = load_contracts()
    keys = load_key_ring(cfg.key_source, create_for=[c.tenant for c in contracts.values()])
    spark = spark_session(cfg, "fieldloop-bench", {"spark.master": "local[2]", "spark.sql.shuffle.partitions": "4"})
    job = SilverJob(cfg, spark, contracts, default_policies(), keys, ResidencyGuard.from_config(cfg))
    try:
        if args.increment_seconds:  # first, while the process is as cold as a scheduled `fieldloop refine`
            increment(spark, base, tmp, contracts, args.increment_seconds, args.repeat)
        t0 = time.perf_counter()
        # Refining from after the seed commit reads the appended one through the change feed,
        # as every run but a table's first does.
        seeded = seed_bronze(spark, cfg, contracts)
        bronze = {cid: job.bronze_path(contracts[cid]) for cid in (VEHICLES_ACME, VEHICLES_PUBLIC)}
        noted = {
            cid: append_frames(spark, path, contracts[cid], args.rows, args.devices, seed=11 + i)
            for i, (cid, path) in enumerate(bronze.items())
        }
        print(
            f"bronze: {args.rows:,} frames x 2 tables, {args.devices} vehicles each, one commit each, "
            f"{noted[VEHICLES_PUBLIC]:,} notes per table ({time.perf_counter() - t0:.0f}s to build)"
        )

        # warm-up: the JVM's code paths, and every Python worker loads the entity recognizer once
        warm_scrubber(spark)
        force(spark.read.format("delta").load(bronze[VEHICLES_ACME]).limit(1000))

        copies = itertools.count()

        def copy(cid: str) -> None:
            rows_only = spark.read.format("delta").load(bronze[cid]).where(f"_kafka_offset >= {FIRST_OFFSET}")
            rows_only.write.format("delta").save(str(tmp / f"copy-{next(copies)}"))

        def fresh(cid: str) -> Callable[[], None]:
            def reset() -> None:
                for o in job.outputs(cid):
                    shutil.rmtree(o.path, ignore_errors=True)
                shutil.rmtree(job.quarantine_path(contracts[cid]), ignore_errors=True)
                spark._jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()

            return reset

        floor, silver, jobs, reports = {}, {}, {}, {}

        def refine(cid: str) -> None:
            jobs[cid] = spark_jobs(spark, lambda: reports.__setitem__(cid, job.run(cid, since=seeded)))

        for cid in bronze:
            floor[cid], silver[cid] = alternating(
                args.repeat, lambda cid=cid: copy(cid), lambda cid=cid: refine(cid), fresh(cid), args.warmup
            )
        n_acme = n_pub = args.rows

        print()
        print(
            f"{f'bronze -> silver, local[2], best of {args.repeat} after {args.warmup} warm-up':<64}"
            f"{'s':>9}{'rows/s':>12}{'ratio':>8}{'median':>8}   timed runs"
        )
        print(row(f"baseline: Delta copy, acme bronze ({n_acme:,} rows)", floor[VEHICLES_ACME], n_acme, None))
        print(
            row(
                "SilverJob acme-mobility (1 pseudonymized table) / copy",
                silver[VEHICLES_ACME],
                n_acme,
                floor[VEHICLES_ACME],
            )
        )
        print(row(f"baseline: Delta copy, public bronze ({n_pub:,} rows)", floor[VEHICLES_PUBLIC], n_pub, None))
        print(
            row(
                "SilverJob public (pseudonymized + anonymized) / copy",
                silver[VEHICLES_PUBLIC],
                n_pub,
                floor[VEHICLES_PUBLIC],
            )
        )
        print(
            row(
                "SilverJob public (pseudonymized + anonymized) / 2x copy",
                silver[VEHICLES_PUBLIC],
                n_pub,
                floor[VEHICLES_PUBLIC],
                times=2,
            )
        )
        print(f"target: ratio <= 1.5.  Spark jobs per run: acme {jobs[VEHICLES_ACME]}, public {jobs[VEHICLES_PUBLIC]}")
        for r in (*reports[VEHICLES_ACME], *reports[VEHICLES_PUBLIC]):
            print(
                f"  {r.table}: {r.rows_in:,} in, {r.rows_out:,} out, expired {r.expired_rows:,}, "
                f"quarantined {sum(r.quarantined.values())}, "
                f"trimmed {r.trimmed_rows}, suppressed rows {r.suppressed_rows}, placeholders "
                f"{sum(r.placeholders.values())}"
            )
        empty = [r.table for r in (*reports[VEHICLES_ACME], *reports[VEHICLES_PUBLIC]) if not r.rows_out]
        if empty:
            raise SystemExit(f"{', '.join(empty)}: no rows out, so the timings above measured no refinement")

        if not args.no_breakdown:
            breakdown(
                spark, job, contracts[VEHICLES_PUBLIC], keys, seeded, args.repeat, args.warmup, floor[VEHICLES_PUBLIC]
            )
    finally:
        spark.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def increment(spark, base, tmp: Path, contracts, seconds: float, repeat: int) -> None:
    """``refine()`` of every stream over a small increment: the demo fleet's ``seconds`` (24 devices).

    What the 15-minute heartbeat pays: the first run in this process (JIT, Python workers
    and the note scrubber not warm, the Spark session already started, as in the demo), then
    the best of ``repeat`` runs on fresh lakes once warm, each with its phases and Spark jobs.
    """
    from refinement.run import refine

    registry = default_registry()
    sink = MemorySink(contracts, registry)
    start = datetime.now(UTC) - timedelta(seconds=seconds)
    spec = FleetSpec(devices=24, seconds=seconds, rate_hz=RATE_HZ, seed=7, start=start)
    Simulation(spec, [], contracts, registry).run(sink, MemoryRawSender())
    lakes = itertools.count()

    def run() -> tuple[float, dict[str, float], int, int]:
        lake = load_config(
            {
                "FIELDLOOP_HOME": str(base.home),
                "FIELDLOOP_LAKE_URI": str(tmp / f"increment-{next(lakes)}"),
                "FIELDLOOP_REFINE_KEY_SOURCE": f"file:{tmp / 'keys.json'}",
            }
        )
        bronze = BronzeJob(lake, spark, contracts, registry, ResidencyGuard.from_config(lake))
        read = [s for s in sink.sent if contracts[s.contract_id].topic in bronze.by_topic]
        bronze.process_batch(spark.createDataFrame(kafka_source_rows(read, contracts), KAFKA_SOURCE_SCHEMA), 0)
        box: dict[str, Any] = {}
        t0 = time.perf_counter()
        jobs = spark_jobs(spark, lambda: box.setdefault("result", refine(lake, spark=spark)))
        return time.perf_counter() - t0, box["result"].seconds, jobs, len(read)

    first = run()
    warm = min((run() for _ in range(max(repeat, 2))), key=lambda r: r[0])
    print(f"small increment: the demo fleet's {seconds:.0f} s (24 devices), {first[3]:,} records into bronze")
    for label, (total, phases, jobs, _) in (("first run in the process", first), ("warm, best run", warm)):
        split = ", ".join(f"{phase} {s:.1f}s" for phase, s in phases.items())
        print(f"  refine, every stream, {label}: {total:.1f}s ({split}; {jobs} Spark jobs)")
    print("  target: <= 30 s for the demo's refine step")
    print()


def kafka_source_rows(sent, contracts) -> list[tuple]:
    """Sent records as rows of Spark's Kafka source, their headers as the SDK sets them."""
    now = datetime.now(UTC)
    rows = []
    for offset, s in enumerate(sent):
        c = contracts[s.contract_id]
        headers = {
            H_CLASS: str(c.data_class),
            H_CONTRACT: c.id,
            H_DEVICE: s.device_id,
            H_SEQ: str(s.seq),
            **({H_TENANT: c.tenant} if c.tenant else {}),
        }
        rows.append(
            (c.topic, 0, offset, now, s.device_id.encode(), s.payload, [(k, v.encode()) for k, v in headers.items()])
        )
    return rows


def breakdown(
    spark,
    job: SilverJob,
    contract,
    keys,
    seeded: int,
    repeat: int,
    warmup: int,
    floor: Timing,
) -> None:
    """Each stage of the public contract's run alone, on the same persisted rows."""
    from pyspark.sql import functions as F

    policy = job.policies[contract.id]
    pseudo, anon = (o.policy for o in job.outputs(contract.id))
    key = keys.active(contract.tenant)
    bronze = job.bronze_path(contract)
    read = job._read_new(bronze, seeded, seeded + 1)
    good = quality.mark(read, policy.expect).where("_rule IS NULL").drop("_rule").persist()
    n = good.count()
    notes = good.where(F.col("driver_note").isNotNull())
    use_rules = ScrubberConfig(use_model=False)
    force(scrub_column(good.limit(10), "driver_note", config=use_rules))  # warm the rules-only scrubber
    ginza = ScrubberConfig(model="ja_ginza")  # the alternative recognizer
    warm_scrubber(spark, ginza)

    outputs = job.outputs(contract.id)
    first = job._first_pass(read, policy, outputs)
    cfg = job.cfg.refine
    ids = first.id_values(list(pseudo.pseudonym_fields))

    def first_pass() -> None:
        job._first_pass(read, policy, outputs).side.unpersist()

    def trim() -> None:
        force(
            anonymize.mark_trip_ends(
                good.select(*ROW_KEY, "ts", "lat", "lon"),
                "_device_id",
                "ts",
                "lat",
                "lon",
                cfg.trip_trim_m,
                cfg.trip_gap_s,
            )
        )

    stages: list[tuple[str, Callable[[], Any]]] = [
        ("read: bronze change feed", lambda: force(read)),
        ("first pass: rules, counts, ids, notes, trips, cells (the gate)", first_pass),
        (
            "  quality rules alone: mark + count per rule, whole rows",
            lambda: quality.mark(read, policy.expect).groupBy("_rule").count().collect(),
        ),
        (
            "pseudonyms: vin, driver, device, one join on their combination",
            lambda: force(pseudonymize(good, pseudo.pseudonym_fields, key, values=ids)),
        ),
        ("scrub_text, every row through mapInArrow", lambda: force(scrub_column(good, "driver_note"))),
        (
            "scrub_text, all rows, rules only (no recognizer): Arrow transport",
            lambda: force(scrub_column(good, "driver_note", config=use_rules)),
        ),
        (
            f"scrub_text, only the rows with a note ({notes.count():,})",
            lambda: force(scrub_column(notes, "driver_note")),
        ),
        ("  the same with GiNZA instead of Sudachi", lambda: force(scrub_column(notes, "driver_note", config=ginza))),
        (
            "the job's pseudonymized transform (notes by key, pseudonyms)",
            lambda: force(
                pseudonymize(
                    job._apply_fields(good, pseudo, first),
                    pseudo.pseudonym_fields,
                    key,
                    values=ids,
                )
            ),
        ),
        ("  trip walk alone (Arrow per device on 5 columns, own shuffle)", trim),
    ]
    trimmed = anonymize.trim_trips(good, "_device_id", "ts", "lat", "lon", cfg.trip_trim_m, cfg.trip_gap_s)
    generalized = job._apply_fields(trimmed, anon, first).select(*anon.output_columns, "_device_id").persist()
    generalized.count()

    def k_anonymity() -> None:
        kept, _ = anonymize.enforce_k_anonymity(
            generalized, "_device_id", anon.quasi_identifiers, job.cfg.refine.k, anon.sensitive
        )
        force(kept)

    stages.append(("k-anonymity + l-diversity (on trimmed, generalized rows)", k_anonymity))

    print()
    print(
        f"{'breakdown, public bronze, each stage alone (noop sink)':<64}{'s':>9}{'rows/s':>12}{'/copy':>8}{'median':>8}"
    )
    for label, run in stages:
        print(row(label, timed(repeat, run, warmup=warmup), n, floor))
    generalized.unpersist()
    first.side.unpersist()
    good.unpersist()


if __name__ == "__main__":
    main()
