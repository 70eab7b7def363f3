"""The ingestion stage's commands: ``fleet simulate``, ``topics apply`` and ``ingest``.

The face (``fieldloop.cli``) registers them. The config is read once
at the entry point; numpy, kafka-python and the SDK are imported inside the command so
``fieldloop --help`` stays instant. :func:`make_edge_sink` is the one place that knows how
to build the real SDK.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from fieldloop.config import FieldloopConfig
from fieldloop.console import ErrorReportingGroup, config_of, console, err_console, stdout_for_json

if TYPE_CHECKING:
    from fieldloop.contracts import DataContract
    from fieldloop.wire import SchemaRegistry
    from ingestion.simulator import FaultSpec, FleetSpec, SimulationReport, Sink

PROGRESS_MIN_ITEMS = 20_000  # below this a run takes a second or two: no bar


def make_edge_sink(cfg: FieldloopConfig, contracts: Mapping[str, DataContract], registry: SchemaRegistry) -> Sink:
    """The real edge SDK behind the simulator's ``Sink`` protocol, spooling under ``<home>/spool``."""
    from ingestion import EdgeProducer, EdgeProducerConfig

    spool_dir = cfg.home / "spool" / "fleet-simulator"
    return EdgeProducer(EdgeProducerConfig.from_kafka_config(cfg.kafka, spool_dir=spool_dir), contracts, registry)


class StackBroker:
    """The embedded broker, for the ``broker-restart`` fault."""

    def __init__(self, cfg: FieldloopConfig, say: Callable[[str], None]) -> None:
        from fieldloop.stack import Stack

        self._stack, self._say = Stack(cfg, only=["kafka"]), say

    def check(self, cfg: FieldloopConfig) -> None:
        """Refuse before anything is sent when the fault could not restart the broker clients use."""
        from ingestion.errors import SimulationError

        local = {f"127.0.0.1:{cfg.kafka.port}", f"localhost:{cfg.kafka.port}"}
        if cfg.kafka.bootstrap_servers not in local:
            raise SimulationError(
                f"broker-restart restarts the embedded broker, but clients use "
                f"{cfg.kafka.bootstrap_servers}: drop the fault or unset FIELDLOOP_KAFKA_BOOTSTRAP"
            )
        if not self._stack.status()[0].running:
            raise SimulationError("broker-restart needs the embedded broker running: `fieldloop stack up --only kafka`")

    def stop(self) -> None:
        self._say("broker-restart: stopping the embedded broker")
        self._stack.down(self._say)

    def start(self) -> None:
        self._say("broker-restart: starting the embedded broker")
        self._stack.up(self._say)


def _parse_faults(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[FaultSpec]:
    from ingestion.errors import FaultSpecError
    from ingestion.simulator import FaultSpec

    try:
        return [FaultSpec.parse(v) for v in values]
    except FaultSpecError as e:
        raise click.BadParameter(str(e)) from e


def _parse_start(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        start = datetime.fromisoformat(value)
    except ValueError as e:
        raise click.BadParameter(f"'{value}' is not ISO 8601 (e.g. 2025-04-01T09:00:00+09:00)") from e
    return start if start.tzinfo else start.replace(tzinfo=UTC)


@click.group("fleet", cls=ErrorReportingGroup, context_settings={"help_option_names": ["-h", "--help"]})
def fleet() -> None:
    """Simulate device fleets (vehicles, robot arms, furnace sensors) streaming to Kafka."""


@fleet.command("simulate")
@click.option(
    "--devices",
    "-n",
    type=click.IntRange(1, 100_000),
    default=10,
    show_default=True,
    help="Number of devices. Of every 10: 5 vehicles in Tokyo/Osaka (each with model telemetry, "
    "public ones with a camera), 3 blast-furnace sensors, 2 robot arms.",
)
@click.option(
    "--seconds",
    type=click.FloatRange(0, min_open=True),
    default=60.0,
    show_default=True,
    help="Simulated duration in seconds of device time (the run itself goes as fast as it can).",
)
@click.option(
    "--rate",
    type=click.FloatRange(0, 1000, min_open=True),
    default=10.0,
    show_default=True,
    help="Records per second (Hz) per device on its main stream; cameras report every 2nd frame, telemetry every 10th.",
)
@click.option(
    "--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Same seed, same records, same faults."
)
@click.option(
    "--start",
    callback=_parse_start,
    metavar="ISO",
    help="Simulated clock start, ISO 8601 (e.g. 2025-04-01T09:00:00+09:00; no offset means UTC). "
    "Default: --seconds before now, so the run ends now. Give it to repeat a run exactly.",
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    callback=_parse_faults,
    metavar="KIND[:PARAM]",
    help="Inject a fault (repeatable): network-drop[:SECONDS=30] (uplink offline), "
    "broker-restart[:SECONDS=15] (embedded broker down), malformed[:FRACTION=0.02] "
    "(junk payloads), duplicates[:FRACTION=0.02] (resent records), clock-skew[:MINUTES=5] "
    "(device clocks off until an NTP correction).",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the run report (counts per stream, device and fault; anomaly ground truth) as JSON here.",
)
@click.option("--dry-run", is_flag=True, help="Generate and count with an in-memory SDK stand-in; no Kafka.")
@click.option(
    "--flush-timeout",
    type=click.FloatRange(0),
    default=60.0,
    show_default=True,
    help="Seconds to wait at the end for everything to be delivered.",
)
@click.pass_context
def simulate(
    ctx: click.Context,
    devices: int,
    seconds: float,
    rate: float,
    seed: int,
    start: datetime | None,
    faults: list[FaultSpec],
    report_path: Path | None,
    dry_run: bool,
    flush_timeout: float,
) -> None:
    """Run a deterministic fleet through the edge SDK and print what was sent, refused and injected.

    Every record is offered to the SDK; junk and duplicates from --fault go around it
    through a plain Kafka producer with fieldloop headers, so the cloud's quarantine and
    de-duplication get exercised. The report reconciles: generated = accepted + refused
    + bypassed (junk bytes the SDK never saw).
    """
    from ingestion.errors import SimulationError
    from ingestion.simulator import FleetSpec

    cfg = config_of(ctx)
    report = simulate_fleet(cfg, FleetSpec(devices, seconds, rate, seed, start), faults, dry_run, flush_timeout)
    print_report(console, report)
    if report_path is not None:
        report.save(report_path)
        console.print(f"report: {report_path}")
    if not report.flushed:
        console.print(
            f"[yellow]not everything was delivered within {flush_timeout:g} s[/]: "
            "the SDK keeps the rest in its spool and sends it on the next run"
        )
    if not report.reconciles():
        raise SimulationError(
            "the report does not reconcile (generated != accepted + refused + bypassed): "
            "this is a simulator bug; keep the report and file it"
        )


def simulate_fleet(
    cfg: FieldloopConfig, spec: FleetSpec, faults: list[FaultSpec], dry_run: bool = False, flush_timeout: float = 30.0
) -> SimulationReport:
    """Run a simulated fleet through the real edge SDK (or an in-memory one for ``dry_run``)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from fieldloop.contracts import load_contracts
    from fieldloop.wire import default_registry
    from ingestion.simulator import KafkaRawSender, MemoryRawSender, MemorySink, Simulation

    contracts = load_contracts(cfg.contracts_dir, cfg.allowed_regions)
    registry = default_registry()
    sim = Simulation(spec, faults, contracts, registry)
    total = sim.fleet.expected_items()
    broker = None
    if dry_run:
        sink: Sink = MemorySink(contracts, registry, keep=False)
        raw: Any = MemoryRawSender(keep=False)
    else:
        if any(f.kind == "broker-restart" for f in faults):
            broker = StackBroker(cfg, lambda line: console.print(f"  {line}"))
            broker.check(cfg)
        sink = make_edge_sink(cfg, contracts, registry)
        try:
            raw = KafkaRawSender(cfg.kafka, contracts)
        except BaseException:
            sink.close()
            raise
    progress = Progress(
        TextColumn("simulating"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=total < PROGRESS_MIN_ITEMS or not console.is_terminal,
    )
    try:
        with progress:
            task = progress.add_task("simulate", total=total)
            report = sim.run(sink, raw, broker, lambda n: progress.update(task, completed=n), flush_timeout)
    finally:
        sink.close()
        raw.close()
    report.dry_run = dry_run
    return report


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def print_report(console: Console, report: SimulationReport) -> None:
    mode = " (dry run: nothing sent to Kafka)" if report.dry_run else ""
    mix = ", ".join(f"{n} {kind}" for kind, n in report.device_mix.items() if n)
    console.print(
        f"fleet: {report.devices} devices ({mix}), {report.seconds:g} s at {report.rate_hz:g} Hz "
        f"from {report.start}, seed {report.seed}{mode}"
    )
    table = Table(title="records by contract")
    for col in ("contract", "topic", "generated", "accepted", "refused", "bypassed", "raw sent"):
        if col in ("contract", "topic"):
            table.add_column(col, overflow="fold")
        else:
            table.add_column(col, justify="right")
    for contract, c in report.streams.items():
        table.add_row(
            contract,
            report.topics[contract],
            *(f"{x:,}" for x in (c.generated, c.accepted, c.refused, c.bypassed, c.raw_sent)),
        )
    t = report.total
    table.add_row(
        "[bold]total[/]", "", *(f"[bold]{x:,}[/]" for x in (t.generated, t.accepted, t.refused, t.bypassed, t.raw_sent))
    )
    console.print(table)
    if report.refused_reasons:
        console.print("refused at the device: " + ", ".join(f"{r} {n:,}" for r, n in report.refused_reasons.items()))
    for fault in report.faults:
        console.print(f"fault {fault['kind']}:{fault['param']:g} ({fault['unit']}): {_fault_detail(fault, report)}")
    if report.anomalies:
        kinds: dict[str, int] = {}
        for a in report.anomalies:
            kinds[a["kind"]] = kinds.get(a["kind"], 0) + 1
        console.print(
            "furnace anomalies (ground truth, not in the records): "
            + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        )
    ok = "[green]reconciles[/]" if report.reconciles() else "[red]does not reconcile[/]"
    console.print(
        f"generated {t.generated:,} = accepted {t.accepted:,} + refused {t.refused:,} "
        f"+ bypassed {t.bypassed:,}: {ok}; raw sent {t.raw_sent:,} "
        f"({report.raw_malformed:,} malformed, {report.duplicates_sent:,} duplicates)"
    )


def _fault_detail(fault: dict[str, Any], report: SimulationReport) -> str:
    kind = fault["kind"]
    if kind in ("network-drop", "broker-restart"):
        what = "uplink offline" if kind == "network-drop" else "broker down"
        if kind == "broker-restart" and report.dry_run:
            what += " (planned; dry run leaves the broker alone)"
        done = "" if fault["executed"] or report.dry_run else " [yellow]not executed[/]"
        return (
            f"{what} {_iso(fault['start_ts'])} .. {_iso(fault['end_ts'])}, "
            f"{fault['records_during']:,} records meanwhile{done}"
        )
    if kind == "malformed":
        parts = [
            f"{k} {m['injected']} (accepted {m['accepted']}, refused {m['refused']}, raw {m['raw_sent']})"
            for k, m in report.malformed.items()
        ]
        return ", ".join(parts) or "none drawn"
    if kind == "duplicates":
        return f"{report.duplicates_sent:,} records resent with the same (device, seq)"
    offsets = sorted({d["offset_s"] for d in fault["devices"].values()})
    skews = ", ".join(f"{o:+g} s" for o in offsets)
    return f"{len(fault['devices'])} device ids skewed by {skews} until an NTP correction"


# topics and ingest ------------------------------------------------------------------------
@click.group(cls=ErrorReportingGroup)
def topics() -> None:
    """Kafka topics, one per data contract (none for secret streams)."""


@topics.command("apply")
@click.option("--partitions", default=3, show_default=True, help="Partitions of newly created topics.")
@click.pass_context
def topics_apply(ctx: click.Context, partitions: int) -> None:
    """Create missing topics and align retention with the contracts. Idempotent."""
    from ingestion.cloud.topics import apply_configured_topics

    for change in apply_configured_topics(config_of(ctx), partitions):
        colour = {"created": "green", "retention-updated": "yellow", "partitions-differ": "red"}.get(
            change.action, "dim"
        )
        console.print(f"  [{colour}]{change.action:<18}[/] {change.topic} {change.detail}")


@click.command()
@click.option("--follow", is_flag=True, help="Run continuously (micro-batches every --trigger-seconds) until Ctrl-C.")
@click.option("--trigger-seconds", default=5, show_default=True, help="Micro-batch interval with --follow (s).")
@click.option("--max-offsets", default=200_000, show_default=True, help="Records per micro-batch at most.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the run's counts and changed tables as JSON (progress on stderr)."
)
@click.pass_context
def ingest(ctx: click.Context, follow: bool, trigger_seconds: int, max_offsets: int, as_json: bool) -> None:
    """Land Kafka records in bronze Delta exactly once; invalid ones go to quarantine.

    Default is --available-now: drain what Kafka holds, then stop (for schedules).
    """
    from fieldloop.contracts import load_contracts
    from fieldloop.residency import ResidencyGuard
    from fieldloop.spark import spark_session
    from fieldloop.wire import default_registry
    from ingestion.cloud.bronze import BronzeJob
    from ingestion.cloud.topics import apply_configured_topics

    cfg = config_of(ctx)
    out = err_console if as_json else console
    contracts = load_contracts(cfg.contracts_dir, cfg.allowed_regions)
    guard = ResidencyGuard.from_config(cfg)
    apply_configured_topics(cfg)
    # the JVM started here keeps the stdout it started with: with --json, stderr
    with stdout_for_json(as_json), out.status("starting Spark ..."):
        spark = spark_session(cfg, "fieldloop-ingest")
    job = BronzeJob(cfg, spark, contracts, default_registry(), guard, max_offsets_per_trigger=max_offsets)
    for contract_id, why in job.refused.items():
        out.print(f"[yellow]{contract_id}: left in Kafka[/]: {why}")
    query = job.start(available_now=not follow, trigger_seconds=trigger_seconds)
    shown = 0
    try:
        while query.isActive:
            query.awaitTermination(1)
            for report in job.reports[shown:]:
                out.print(
                    f"  batch {report.batch_id}: {report.consumed} consumed, {sum(report.inserted.values())} new, "
                    f"{sum(report.duplicates.values())} duplicates, {sum(report.quarantined.values())} quarantined "
                    f"{dict(sorted(report.reasons.items())) or ''} ({report.seconds:.1f}s)"
                )
            shown = len(job.reports)
    except KeyboardInterrupt:
        out.print("stopping after the current batch ...")
        query.stop()
    if query.exception():
        from fieldloop.errors import FieldloopError

        raise FieldloopError(f"ingestion stopped: {query.exception()}")
    totals = {
        k: sum(getattr(r, k) if k == "consumed" else sum(getattr(r, k).values()) for r in job.reports)
        for k in ("consumed", "inserted", "duplicates", "quarantined")
    }
    out.print("ingested: " + ", ".join(f"{v} {k}" for k, v in totals.items()))
    if as_json:
        inserted: dict[str, int] = {}
        for report in job.reports:
            for table, n in report.inserted.items():
                inserted[table] = inserted.get(table, 0) + n
        summary = {
            **totals,
            "inserted_by_table": inserted,
            "batches": len(job.reports),
            "changed_tables": sorted(f"bronze/{t}" for t, n in inserted.items() if n),
            "refused": job.refused,
        }
        click.echo(json.dumps(summary, indent=2))
