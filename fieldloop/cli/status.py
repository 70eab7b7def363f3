"""``fieldloop status``: the whole loop on one screen, for a platform engineer.

Each section is read from what already records it, read-only and without Spark:

* **stack**: each component's health, as ``fieldloop stack status`` finds it;
* **lake**: every Delta table (``fieldloop tables``) and its freshness: the age of its newest
  commit that changed rows (compaction, VACUUM and empty runs do not make a table fresh);
* **models**: each registered ``fieldloop.*`` model, its aliases (candidate, approved,
  champion) and the guardrail verdict (``fieldloop.guardrail.verdict``) of each aliased version;
* **fleets**: what each fleet runs (its signed release pointer: the champion and, during a
  rollout, the stage), its latest rollout from ``fleet/rollouts`` with the last decision and
  its figures, and the release roles' expiry;
* **campaigns**: each fleet's signed collection campaigns (``<fleet>/campaigns.json`` in its
  release role), read as ``fieldloop campaign list`` reads them
  (:class:`actuation.campaigns.CampaignBook`), each with its state (active, expired, stopped);
* **incidents (24 h)**, one each: a rollout decision to ``rollback`` or ``pause``; a
  quarantine table (``quarantine/*``: bronze's invalid records, silver's quality failures)
  that received rows; a model version whose devices reported interventions (gold's hourly
  telemetry: records × intervention rate, summed over the hours that started in the window);
* **KPIs**:

  - *safety-pipeline readiness*: the share of the fleets in ``actuation/fleets.toml`` that are
    ready, a fleet being ready when its release pointer names a champion, that version's
    ``fieldloop.guardrail.verdict`` tag is ``pass``, and none of the roles a device verifies
    it with (root, targets, snapshot, timestamp, ``fleet-<name>``) has expired. Unknown
    (null) when a verdict cannot be read;
  - *incident count*: the incidents above;
  - *loop closure time*: for the rollout that completed last, from the commit of the newest
    data its model was trained on (the latest commit time among the Delta versions in the
    version's ``fieldloop.lineage.inputs``) to the rollout's ``complete`` decision. Null,
    with why, when no rollout completed or the lineage or those commits cannot be read.

Each source is read through a small port (:class:`Lake`, :class:`Models`, :class:`Release`,
:class:`Decisions`, :class:`CampaignList`); one that cannot be read leaves its section empty
with a line saying what is missing and the command that fixes it, so the screen never fails
with the loop half down, and the command exits 0 unless the config itself is invalid.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import click
from rich.table import Table

from fieldloop.console import config_of, console

logger = logging.getLogger(__name__)

WINDOW = timedelta(hours=24)  # incidents are counted over this window
HISTORY = 50  # commits read for a table's freshness
TOP_ROLES = ("root", "targets", "snapshot", "timestamp")  # every device verifies with these
ROLLBACK, PAUSE, COMPLETE = "rollback", "pause", "complete"  # actuation.rollout.audit's actions
NOT_JUDGED = "not judged"  # a version without a guardrail verdict tag


# What the ports hand over -------------------------------------------------------------
@dataclass(frozen=True)
class Commit:
    """One entry of a table's Delta log."""

    version: int
    at: datetime
    rows: int  # rows the commit wrote
    data: bool  # whether it changed the table's rows (upkeep and empty runs do not)


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    aliases: dict[str, int]  # alias -> version
    latest_version: int | None


@dataclass(frozen=True)
class Interventions:
    """A model version's interventions over the window, from gold's hourly telemetry."""

    model: str
    version: str  # as the devices reported it
    interventions: int
    records: int
    last_hour: datetime


class Lake(Protocol):
    def tables(self) -> Sequence[Any]:
        """The catalog's tables (:class:`fieldloop.catalog.TableInfo`); read once, asked twice."""

    def commits(self, uri: str) -> list[Commit]:
        """The table's commits, newest first."""

    def interventions(self, since: datetime) -> list[Interventions] | None:
        """Interventions per model version since ``since``; None: no hourly telemetry table."""


class Models(Protocol):
    def models(self) -> list[RegisteredModel]: ...

    def tags(self, name: str, version: int) -> dict[str, str]: ...


class Release(Protocol):
    """What is read of :class:`actuation.release.repository.Repository`."""

    dir: Any

    def exists(self) -> bool: ...

    def roles(self) -> list[Any]: ...

    def due(self) -> list[Any]: ...

    def pointer(self, fleet: str) -> Any: ...


class Decisions(Protocol):
    """What is read of :class:`actuation.rollout.audit.RolloutLog`."""

    def rows(self, fleet: str | None = None) -> list[Any]: ...


class CampaignList(Protocol):
    """What is read of :class:`actuation.campaigns.CampaignBook`, as ``fieldloop campaign list`` reads it."""

    def list(self, fleet: str | None = None) -> list[Any]:
        """The fleet's signed campaigns (:class:`actuation.contract.Campaign`), newest first."""


# Sections: the JSON keys are these fields ------------------------------------------------
@dataclass(frozen=True)
class Component:
    name: str
    url: str
    healthy: bool
    detail: str


@dataclass(frozen=True)
class StackSection:
    components: list[Component]
    missing: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TableRow:
    layer: str
    name: str
    version: int
    rows: int
    last_data_version: int | None
    last_data_at: datetime | None
    age_s: float | None  # freshness: seconds since last_data_at


@dataclass(frozen=True)
class LakeSection:
    uri: str
    tables: list[TableRow]
    missing: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AliasRow:
    alias: str
    version: int
    verdict: str  # fieldloop.guardrail.verdict: pass | fail, or NOT_JUDGED


@dataclass(frozen=True)
class ModelRow:
    name: str
    latest_version: int | None
    aliases: list[AliasRow]


@dataclass(frozen=True)
class ModelsSection:
    uri: str
    models: list[ModelRow]
    missing: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RoleRow:
    name: str
    version: int
    expires: datetime
    expired: bool
    due: bool  # inside its renewal window: `fieldloop release refresh` renews it


@dataclass(frozen=True)
class Champion:
    model: str
    version: int
    verdict: str | None  # pass | fail | NOT_JUDGED; None: unknown, MLflow could not be read


@dataclass(frozen=True)
class StageRow:
    rollout_id: str
    name: str
    mode: str
    share: float
    model: str
    version: int


@dataclass(frozen=True)
class DecisionRow:
    at: datetime
    action: str
    stage: str
    state: str
    reason: str
    requested_by: str
    figures: dict[str, Any]


@dataclass(frozen=True)
class RolloutRow:
    id: str
    model: str
    version: int
    state: str
    stage: str
    started_at: datetime
    last: DecisionRow


@dataclass(frozen=True)
class FleetRow:
    name: str
    task: str
    tenant: str | None
    champion: Champion | None
    stage: StageRow | None
    rollout: RolloutRow | None
    expired_roles: list[str] | None  # None: the repository could not be read


@dataclass(frozen=True)
class FleetsSection:
    repository: str
    roles: list[RoleRow]
    fleets: list[FleetRow]
    missing: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FleetCampaigns:
    fleet: str
    active: int | None  # campaigns active now; None: the fleet's campaigns could not be read
    campaigns: list[dict[str, Any]] | None  # as `fieldloop campaign list --json` prints them


@dataclass(frozen=True)
class CampaignsSection:
    fleets: list[FleetCampaigns]
    missing: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Incident:
    kind: str  # rollback | pause | quarantine | interventions
    at: datetime  # when (the newest, for counts over the window)
    where: str  # fleet, table or model version
    count: int  # 1 for a decision; rows or interventions otherwise
    detail: str


@dataclass(frozen=True)
class IncidentsSection:
    since: datetime
    incidents: list[Incident]
    missing: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Kpi:
    value: float | None  # None: not computable now, `detail` says why
    unit: str
    detail: str
    parts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class KpisSection:
    readiness: Kpi
    incidents_24h: Kpi
    loop_closure: Kpi


@dataclass(frozen=True)
class Status:
    generated_at: datetime
    stack: StackSection
    lake: LakeSection
    models: ModelsSection
    fleets: FleetsSection
    campaigns: CampaignsSection
    incidents: IncidentsSection
    kpis: KpisSection

    def as_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=_json_value))


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


# Section builders ---------------------------------------------------------------------
def stack_section(statuses: Sequence[Any]) -> StackSection:
    """From :meth:`fieldloop.stack.Stack.status`."""
    components = [Component(s.name, s.url, s.health.ok, s.health.detail) for s in statuses]
    down = [c.name for c in components if not c.healthy]
    missing = [f"{', '.join(down)} not healthy: `fieldloop stack up` starts what is down"] if down else []
    return StackSection(components, missing)


def lake_section(uri: str, lake: Lake, now: datetime) -> LakeSection:
    """Every table of the lake with its freshness."""
    rows = []
    for t in lake.tables():
        last = next((c for c in lake.commits(t.path)[:HISTORY] if c.data), None)
        age = None if last is None else (now - last.at).total_seconds()
        rows.append(TableRow(t.layer, t.name, t.version, t.rows, last and last.version, last and last.at, age))
    missing = (
        [] if rows else [f"no Delta table in {uri} yet: `fieldloop ingest` writes bronze, `fieldloop refine` the rest"]
    )
    return LakeSection(uri, rows, missing)


def models_section(uri: str, models: Models) -> ModelsSection:
    from fieldloop.registry import ALIASES

    rows = []
    for m in sorted(models.models(), key=lambda m: m.name):
        aliases = [AliasRow(a, m.aliases[a], _verdict(models, m.name, m.aliases[a])) for a in ALIASES if a in m.aliases]
        rows.append(ModelRow(m.name, m.latest_version, aliases))
    missing = [] if rows else ["no fieldloop.* model registered yet: `fieldloop train --task T` registers one"]
    return ModelsSection(uri, rows, missing)


def _verdict(models: Models, name: str, version: int) -> str:
    from fieldloop.registry import GUARDRAIL_TAG_PREFIX

    return models.tags(name, version).get(GUARDRAIL_TAG_PREFIX + "verdict", NOT_JUDGED)


def fleets_section(
    fleets: Sequence[Any], release: Release | None, decisions: Decisions | None, models: Models | None, now: datetime
) -> FleetsSection:
    """One row per fleet of ``actuation/fleets.toml``; ``None`` for a source that could not be opened."""
    missing: list[str] = []
    roles = _roles(release, now, missing)
    rows = _decisions(decisions)
    rows_of = {f.name: [d for d in rows if d.fleet == f.name] for f in fleets}
    out = []
    for f in fleets:
        pointer = _pointer(release, f.name, missing)
        expired = None if roles is None else [r.name for r in roles if r.expired and r.name in _verified_by(f.name)]
        out.append(
            FleetRow(
                f.name,
                f.task,
                f.tenant,
                _champion(pointer, models),
                _stage(pointer),
                _latest_rollout(rows_of[f.name]),
                expired,
            )
        )
    if decisions is not None and not rows:
        missing.append("no rollout recorded yet: `fieldloop rollout start` begins one")
    return FleetsSection(str(release.dir) if release else "", roles or [], out, missing)


def _verified_by(fleet: str) -> tuple[str, ...]:
    return (*TOP_ROLES, f"fleet-{fleet}")


def _roles(release: Release | None, now: datetime, missing: list[str]) -> list[RoleRow] | None:
    if release is None:
        return None
    if not release.exists():
        missing.append(f"no release repository in {release.dir}: `fieldloop release init` creates it")
        return []
    due = {r.name for r in release.due()}
    roles = [RoleRow(r.name, r.version, r.expires, r.expires <= now, r.name in due) for r in release.roles()]
    late = [r.name for r in roles if r.due]
    if late:
        fix = "`fieldloop release refresh --root`" if "root" in late else "`fieldloop release refresh`"
        missing.append(f"roles {', '.join(late)} expired or expire within their renewal window: {fix} renews them")
    return roles


def _pointer(release: Release | None, fleet: str, missing: list[str]) -> Any:
    if release is None or not release.exists():
        return None
    try:
        return release.pointer(fleet)
    except Exception as e:  # one fleet's role unreadable (e.g. added after `release init`): the others still show
        missing.append(f"{fleet}: its release pointer could not be read ({type(e).__name__}: {str(e)[:200]})")
        return None


def _decisions(decisions: Decisions | None) -> list[Any]:
    return [] if decisions is None else sorted(decisions.rows(), key=lambda d: (d.fleet, d.seq))


def _champion(pointer: Any, models: Models | None) -> Champion | None:
    if pointer is None:
        return None
    active = pointer.active
    verdict = None if models is None else _verdict(models, active.model, active.version)
    return Champion(active.model, active.version, verdict)


def _stage(pointer: Any) -> StageRow | None:
    s = None if pointer is None else pointer.stage
    if s is None:
        return None
    return StageRow(s.rollout_id, s.name, s.mode, s.share, s.candidate.model, s.candidate.version)


def _latest_rollout(rows: list[Any]) -> RolloutRow | None:
    if not rows:
        return None
    latest = [d for d in rows if d.rollout_id == rows[-1].rollout_id]
    first, last = latest[0], latest[-1]
    return RolloutRow(
        first.rollout_id,
        first.model,
        first.version,
        last.state,
        last.stage,
        first.at,
        DecisionRow(last.at, last.action, last.stage, last.state, last.reason, last.requested_by, last.figures),
    )


def campaigns_section(
    fleets: Sequence[Any], release: Release | None, campaigns: CampaignList | None, now: datetime
) -> CampaignsSection:
    """One row per fleet of ``actuation/fleets.toml``: its signed campaigns, newest first, each
    as ``fieldloop campaign list`` shows it; ``None`` for a source that could not be opened."""
    from actuation.campaigns import campaign_row, campaign_state

    if release is not None and not release.exists():
        why = f"no release repository in {release.dir}: `fieldloop release init` creates it"
        return CampaignsSection([FleetCampaigns(f.name, None, None) for f in fleets], [why])
    if campaigns is None:
        return CampaignsSection([FleetCampaigns(f.name, None, None) for f in fleets], [])
    missing: list[str] = []
    rows = []
    for f in fleets:
        try:
            signed = campaigns.list(f.name)
        except Exception as e:  # one fleet's role unreadable: the others still show
            missing.append(f"{f.name}: its campaigns could not be read ({type(e).__name__}: {str(e)[:200]})")
            rows.append(FleetCampaigns(f.name, None, None))
            continue
        active = sum(campaign_state(c, now) == "active" for c in signed)
        rows.append(FleetCampaigns(f.name, active, [campaign_row(c, now) for c in signed]))
    if not any(r.campaigns for r in rows) and not missing:
        missing.append("no campaign signed yet: `fieldloop campaign create --fleet F --trigger T` starts one")
    return CampaignsSection(rows, missing)


def incidents_section(
    since: datetime, decisions: list[Any], lake_tables: Sequence[Any], lake: Lake | None
) -> IncidentsSection:
    """Every incident since ``since`` (see the module docstring for what counts)."""
    found = [
        Incident(d.action, d.at, d.fleet, 1, f"{d.model} v{d.version} at {d.stage}: {d.reason} ({d.requested_by})")
        for d in decisions
        if d.action in (ROLLBACK, PAUSE) and d.at >= since
    ]
    missing: list[str] = []
    if lake is not None:
        found += _guarded(
            "the quarantine tables", lambda: _quarantined(since, lake_tables, lake), lambda m: missing.extend(m) or []
        )
        telemetry = _guarded(
            "the hourly telemetry", lambda: lake.interventions(since), lambda m: missing.extend(m) or []
        )
        if telemetry is None:
            missing.append("no hourly telemetry table in gold, interventions not counted: `fieldloop refine` builds it")
        found += [
            Incident(
                "interventions",
                t.last_hour,
                f"{t.model} v{t.version}",
                t.interventions,
                f"{t.interventions} interventions in {t.records} inferences",
            )
            for t in telemetry or []
            if t.interventions > 0
        ]
    return IncidentsSection(since, sorted(found, key=lambda i: i.at, reverse=True), missing)


def _quarantined(since: datetime, tables: Sequence[Any], lake: Lake) -> list[Incident]:
    found = []
    for t in tables:
        if t.layer != "quarantine":
            continue
        recent = [c for c in lake.commits(t.path) if c.at >= since and c.data and c.rows > 0]
        if recent:
            rows = sum(c.rows for c in recent)
            what = f"{rows} rows in {len(recent)} commit{'' if len(recent) == 1 else 's'}"
            found.append(Incident("quarantine", recent[0].at, f"quarantine/{t.name}", rows, what))
    return found


# KPIs -----------------------------------------------------------------------------------
def readiness_kpi(fleets: FleetsSection) -> Kpi:
    """The share of fleets that are ready (see the module docstring)."""
    parts = {f.name: _readiness_of(f) for f in fleets.fleets}
    if not parts:
        return Kpi(None, "share", "no fleet could be read", parts)
    unknown = [name for name, why in parts.items() if why.startswith("unknown")]
    ready = sum(why == "ready" for why in parts.values())
    if unknown:
        return Kpi(None, "share", f"unknown: {', '.join(unknown)} could not be judged", parts)
    return Kpi(ready / len(parts), "share", f"{ready} of {len(parts)} fleets ready", parts)


def _readiness_of(f: FleetRow) -> str:
    if f.champion is None:
        return "no champion: nothing published to it (`fieldloop release publish`)"
    if f.expired_roles is None:
        return "unknown: the release repository could not be read"
    if f.expired_roles:
        return f"roles expired: {', '.join(f.expired_roles)} (`fieldloop release refresh`)"
    if f.champion.verdict is None:
        return "unknown: the champion's verdict could not be read"
    if f.champion.verdict != "pass":
        return f"champion {f.champion.model} v{f.champion.version}: verdict {f.champion.verdict}"
    return "ready"


def incidents_kpi(incidents: IncidentsSection) -> Kpi:
    kinds: dict[str, int] = {}
    for i in incidents.incidents:
        kinds[i.kind] = kinds.get(i.kind, 0) + 1
    detail = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none"
    if incidents.missing:
        detail += " (not every source could be read)"
    return Kpi(float(len(incidents.incidents)), "incidents", detail, {k: str(n) for k, n in kinds.items()})


def loop_closure_kpi(decisions: list[Any], models: Models | None, lake: Lake | None) -> Kpi:
    """From the newest training data's commit to the completion of the rollout that completed last."""
    from fieldloop.lineage import LineageError, ModelLineage

    completed = [d for d in decisions if d.action == COMPLETE]
    if not completed:
        return Kpi(None, "s", "n/a: no rollout has completed yet")
    done = max(completed, key=lambda d: d.at)
    what = f"{done.model} v{done.version} on {done.fleet}"
    if models is None or lake is None:
        return Kpi(None, "s", f"n/a: {what}: {'MLflow' if models is None else 'the lake'} could not be read")
    try:
        inputs = ModelLineage.from_mlflow_tags(models.tags(done.model, done.version)).inputs
    except LineageError as e:
        return Kpi(None, "s", f"n/a: {what}: {e}")
    landed = []
    for i in inputs:
        at = next((c.at for c in lake.commits(i.path) if c.version == i.delta_version), None)
        if at is None:
            return Kpi(None, "s", f"n/a: {what}: {i.table}@v{i.delta_version} is no longer in its Delta log")
        landed.append((at, f"{i.table}@v{i.delta_version}"))
    if not landed:
        return Kpi(None, "s", f"n/a: {what}: its lineage names no input table")
    at, table = max(landed)
    seconds = (done.at - at).total_seconds()
    return Kpi(
        seconds,
        "s",
        f"{what}: {table} committed {at:%m-%d %H:%M}, rollout {done.rollout_id} completed {done.at:%m-%d %H:%M} UTC",
    )


# Gathering --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sources:
    """The opened sources; None for one that could not be opened, with why in ``missing``."""

    statuses: Callable[[], Sequence[Any]]
    lake_uri: str
    lake: Lake
    mlflow_uri: str
    models: Models | None
    fleets: Sequence[Any]
    release: Release | None
    decisions: Decisions | None
    campaigns: CampaignList | None = None
    missing: dict[str, list[str]] = field(default_factory=dict)  # section -> why a source is absent


T = TypeVar("T")
S = TypeVar("S", StackSection, LakeSection, ModelsSection, FleetsSection, CampaignsSection, IncidentsSection)


def _guarded(what: str, build: Callable[[], T], empty: Callable[[list[str]], T]) -> T:
    try:
        return build()
    except Exception as e:  # a status screen reports a broken source; it never dies of one
        logger.debug("status: reading %s failed", what, exc_info=True)
        return empty([f"{what} could not be read ({type(e).__name__}: {str(e)[:200]})"])


def gather(src: Sources, now: datetime) -> Status:
    """Every section, then the KPIs from them."""
    since, uri = now - WINDOW, src.lake_uri
    lake = _guarded("the lake", lambda: lake_section(uri, src.lake, now), lambda m: LakeSection(uri, [], m))
    unread: list[str] = []  # what the incidents could not count
    tables: list[Any] = _guarded("the lake's tables", lambda: list(src.lake.tables()), lambda m: unread.extend(m) or [])
    models = ModelsSection(src.mlflow_uri, [], [])
    if src.models is not None:
        models = _guarded(
            "MLflow", lambda: models_section(src.mlflow_uri, src.models), lambda m: replace(models, missing=m)
        )
    fleets = _guarded(
        "the fleets",
        lambda: fleets_section(src.fleets, src.release, src.decisions, src.models, now),
        lambda m: FleetsSection("", [], [], m),
    )
    campaigns = _guarded(
        "the campaigns",
        lambda: campaigns_section(src.fleets, src.release, src.campaigns, now),
        lambda m: CampaignsSection([], m),
    )
    if src.decisions is None:
        unread.append("the rollout log could not be opened: rollbacks and pauses not counted")
    decisions = _guarded("the rollout decisions", lambda: _decisions(src.decisions), lambda m: unread.extend(m) or [])
    incidents = _with(
        _guarded(
            "incidents",
            lambda: incidents_section(since, decisions, tables, src.lake),
            lambda m: IncidentsSection(since, [], m),
        ),
        unread,
    )
    closure = _guarded(
        "loop closure", lambda: loop_closure_kpi(decisions, src.models, src.lake), lambda m: Kpi(None, "s", m[0])
    )
    stack = _guarded("the stack", lambda: stack_section(src.statuses()), lambda m: StackSection([], m))  # last: slow
    m = src.missing
    return Status(
        now,
        _with(stack, m.get("stack")),
        _with(lake, m.get("lake")),
        _with(models, m.get("models")),
        _with(fleets, m.get("fleets")),
        _with(campaigns, m.get("campaigns")),
        incidents,
        KpisSection(readiness_kpi(fleets), incidents_kpi(incidents), closure),
    )


def _with(section: S, missing: list[str] | None) -> S:
    return replace(section, missing=[*missing, *section.missing]) if missing else section


# The real sources ---------------------------------------------------------------------------
class DeltaLake:
    """:class:`Lake` over the catalog and ``deltalake``: Delta logs only, plus gold's small hourly
    telemetry table. Each table's log is read once per run."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self._tables: list[Any] | None = None
        self._commits: dict[str, list[Commit]] = {}

    def tables(self) -> list[Any]:
        from fieldloop.catalog import list_tables

        if self._tables is None:
            self._tables = list_tables(self.cfg)
        return self._tables

    def commits(self, uri: str) -> list[Commit]:
        from fieldloop.catalog import changed_rows, open_table

        if uri not in self._commits:
            self._commits[uri] = [
                Commit(
                    int(c["version"]),
                    datetime.fromtimestamp(c["timestamp"] / 1000, UTC),
                    int((c.get("operationMetrics") or {}).get("numOutputRows") or 0),
                    changed_rows(c),
                )
                for c in open_table(self.cfg, uri).history()
            ]
        return self._commits[uri]

    def interventions(self, since: datetime) -> list[Interventions] | None:
        from fieldloop.catalog import find_table
        from fieldloop.contracts import load_contracts
        from fieldloop.datasets import GoldKind, gold_tables

        contracts = load_contracts(self.cfg.contracts_dir, self.cfg.allowed_regions)
        names = [t.name for t in gold_tables(contracts) if t.kind is GoldKind.TELEMETRY_HOURLY]
        found = [t for t in (find_table(self.cfg, f"{self.cfg.lake.rstrip('/')}/gold/{n}") for n in names) if t]
        if not found:
            return None
        columns = ["model_name", "model_version", "hour", "records", "intervention_rate"]
        totals: dict[tuple[str, str], list[Any]] = {}
        for table in found:
            for row in table.to_pyarrow_table(columns=columns).to_pylist():
                hour = row["hour"] if row["hour"].tzinfo else row["hour"].replace(tzinfo=UTC)
                if hour < since:
                    continue
                t = totals.setdefault((row["model_name"], row["model_version"]), [0.0, 0, hour])
                t[0] += (row["intervention_rate"] or 0.0) * row["records"]
                t[1] += row["records"]
                t[2] = max(t[2], hour)
        return [Interventions(m, v, round(n), r, last) for (m, v), (n, r, last) in sorted(totals.items())]


class MlflowModels:
    """:class:`Models` over MLflow's registry: the ``fieldloop.*`` models."""

    def __init__(self, uri: str) -> None:
        from mlflow import MlflowClient

        self._client = MlflowClient(uri)
        self._tags: dict[tuple[str, int], dict[str, str]] = {}

    def models(self) -> list[RegisteredModel]:
        found = self._client.search_registered_models(filter_string="name LIKE 'fieldloop.%'", max_results=1000)
        return [
            RegisteredModel(
                m.name,
                {a: int(v) for a, v in (m.aliases or {}).items()},
                max((int(v.version) for v in m.latest_versions or []), default=None),
            )
            for m in found
        ]

    def tags(self, name: str, version: int) -> dict[str, str]:
        if (name, version) not in self._tags:
            self._tags[name, version] = dict(self._client.get_model_version(name, str(version)).tags)
        return self._tags[name, version]


def _mlflow_answers(uri: str) -> str | None:
    """Why the tracking server cannot be asked (None: it answers). MLflow's own client would
    retry a dead server for minutes."""
    import requests

    if not uri.startswith(("http://", "https://")):
        return None
    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=3).raise_for_status()
    except requests.RequestException as e:
        return f"MLflow does not answer at {uri} ({type(e).__name__}): `fieldloop stack up --only mlflow`"
    return None


def open_sources(cfg: Any) -> Sources:
    """Open every source; one that cannot be opened is None, with why.

    The stack's health checks wait on the network: they run in a thread of their own
    meanwhile (the caller asks for them last, through ``statuses``).
    """
    from concurrent.futures import ThreadPoolExecutor

    from fieldloop.stack import Stack

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="status-stack")
    health = pool.submit(lambda: Stack(cfg).status())
    pool.shutdown(wait=False)  # the check runs on; its result is awaited in `statuses`
    missing: dict[str, list[str]] = {}

    def opened(section: str, what: str, open_: Callable[[], T]) -> T | None:
        return _guarded(what, open_, lambda m: missing.setdefault(section, []).extend(m) and None)

    def fleets() -> Sequence[Any]:
        from actuation.contract import load_fleets

        return load_fleets().fleet

    def release() -> Release:
        from actuation.release.cli import open_repository

        return open_repository(cfg)

    def decisions() -> Decisions:
        from actuation.rollout.audit import RolloutLog

        return RolloutLog.for_config(cfg)

    def campaigns(repository: Release | None) -> CampaignList | None:
        from actuation.campaigns import CampaignBook

        return None if repository is None else CampaignBook(repository)

    models = None
    why = _mlflow_answers(cfg.mlflow.uri)
    if why:
        missing["models"] = [why]
    else:
        models = opened("models", "MLflow", lambda: MlflowModels(cfg.mlflow.uri))
    opened_release = opened("fleets", "the release repository", release)
    if opened_release is None:
        missing["campaigns"] = ["the release repository could not be opened: campaigns not read"]
    return Sources(
        statuses=health.result,
        lake_uri=cfg.lake,
        lake=DeltaLake(cfg),
        mlflow_uri=cfg.mlflow.uri,
        models=models,
        fleets=opened("fleets", "the fleets file", fleets) or [],
        release=opened_release,
        decisions=opened("fleets", "the rollout log", decisions),
        campaigns=campaigns(opened_release),  # what `fieldloop campaign list` reads, on the same repository
        missing=missing,
    )


# The command ------------------------------------------------------------------------------
@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts (stable keys).")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """The loop on one screen: stack, lake freshness, models and aliases, fleets and rollouts,
    campaigns, incidents of the last 24 h and the KPIs. Read-only; a part that is down is named
    with the command that brings it back. Exits 0 unless the config is invalid."""
    from fieldloop.console import stdout_for_json

    cfg = config_of(ctx)
    # a server that stops answering mid-run must not hold the screen for MLflow's minutes of retries
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    with stdout_for_json(as_json):
        found = gather(open_sources(cfg), datetime.now(UTC))
    if as_json:
        click.echo(json.dumps(found.as_dict(), indent=2))
        return
    show(found)


# The screen -------------------------------------------------------------------------------
def show(s: Status) -> None:
    now = s.generated_at
    console.print(f"[bold]fieldloop status[/]  {now:%Y-%m-%d %H:%M:%S} UTC")
    _heading("stack", s.stack.missing)
    console.print(
        "  " + "   ".join(f"{c.name} {'[green]up[/]' if c.healthy else '[red]down[/]'}" for c in s.stack.components)
    )
    _heading(f"lake  {s.lake.uri}", s.lake.missing)
    if s.lake.tables:
        table = _table("table", "ver", "rows", "last data")
        for t in s.lake.tables:
            table.add_row(f"{t.layer}/{t.name}", str(t.version), str(t.rows), _ago(t.age_s))
        console.print(table)
    _heading(f"models  {s.models.uri}", s.models.missing)
    for m in s.models.models:
        aliases = ", ".join(f"@{a.alias} v{a.version} ({_verdict_mark(a.verdict)})" for a in m.aliases) or "no alias"
        console.print(f"  {m.name}  latest v{m.latest_version}: {aliases}")
    _heading("fleets & rollouts", s.fleets.missing)
    for f in s.fleets.fleets:
        console.print("  " + _fleet_line(f, now), soft_wrap=True)
    _heading("campaigns", s.campaigns.missing)
    for fc in s.campaigns.fleets:
        console.print("  " + _campaigns_line(fc), soft_wrap=True)
    _heading(f"incidents (24 h): {len(s.incidents.incidents)}", s.incidents.missing)
    for i in s.incidents.incidents[:10]:
        console.print(f"  {i.at:%m-%d %H:%M} [red]{i.kind:<13}[/] {i.where}: {i.detail}", soft_wrap=True)
    if len(s.incidents.incidents) > 10:
        console.print(f"  ... {len(s.incidents.incidents) - 10} more in --json")
    _heading("KPIs", [])
    k = s.kpis
    ready = "n/a" if k.readiness.value is None else f"{k.readiness.value:.0%}"
    console.print(f"  safety-pipeline readiness  [bold]{ready}[/]  {k.readiness.detail}", soft_wrap=True)
    for name, why in k.readiness.parts.items():
        if why != "ready":
            console.print(f"    {name}: {why}", soft_wrap=True)
    console.print(
        f"  incidents (24 h)           [bold]{k.incidents_24h.value:.0f}[/]  {k.incidents_24h.detail}", soft_wrap=True
    )
    closure = "n/a" if k.loop_closure.value is None else _ago(k.loop_closure.value)
    console.print(f"  loop closure time          [bold]{closure}[/]  {k.loop_closure.detail}", soft_wrap=True)


def _heading(title: str, missing: list[str]) -> None:
    console.print(f"\n[bold cyan]{title}[/]")
    for line in missing:
        console.print(f"  [yellow]! {line}[/]", soft_wrap=True)


def _table(*columns: str) -> Table:
    table = Table(box=None, padding=(0, 2), show_edge=False, pad_edge=False)
    for c in columns:
        table.add_column(c, no_wrap=c == "table", justify="right" if c in ("ver", "rows") else "left")
    return table


def _fleet_line(f: FleetRow, now: datetime) -> str:
    runs = "nothing published" if f.champion is None else f"champion {f.champion.model} v{f.champion.version}"
    if f.champion is not None:
        runs += f" ({_verdict_mark(f.champion.verdict)})"
    if f.stage is not None:
        runs += f"; stage {f.stage.name} ({f.stage.mode} {f.stage.share:.0%}) of v{f.stage.version}"
    line = f"[bold]{f.name}[/] ({f.task}{', ' + f.tenant if f.tenant else ''}): {runs}"
    if f.expired_roles:
        line += f"; [red]roles expired: {', '.join(f.expired_roles)}[/]"
    if f.rollout is not None:
        r, d = f.rollout, f.rollout.last
        line += (
            f"\n    rollout {r.id} of v{r.version}: {r.state} at {r.stage}; last {d.action} "
            f"{_ago((now - d.at).total_seconds())} ago: {d.reason}"
        )
    return line


def _campaigns_line(fc: FleetCampaigns) -> str:
    if fc.campaigns is None:
        return f"[bold]{fc.fleet}[/]: not read"
    if not fc.campaigns:
        return f"[bold]{fc.fleet}[/]: none"
    line = f"[bold]{fc.fleet}[/]: {fc.active} active of {len(fc.campaigns)}"
    for c in fc.campaigns[:5]:
        mark = {"active": "[green]active[/]", "stopped": "stopped", "expired": "expired"}[c["state"]]
        line += (
            f"\n    {c['id']} {mark} '{c['trigger']}', {c['window_before']}+{c['window_after']} frames, "
            f"{c['max_per_hour']}/h, until {datetime.fromisoformat(c['expires_at']):%m-%d %H:%M} UTC"
        )
    if len(fc.campaigns) > 5:
        line += f"\n    ... {len(fc.campaigns) - 5} more in --json"
    return line


def _verdict_mark(verdict: str | None) -> str:
    return {"pass": "[green]pass[/]", "fail": "[red]fail[/]", None: "verdict unknown"}.get(verdict, str(verdict))


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"
