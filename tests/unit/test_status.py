"""``fieldloop status``: each section from small in-memory sources, the KPIs, the JSON shape,
and a screen that still answers when every part of the loop is missing."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from actuation.campaigns import CampaignBook
from actuation.contract import Budget, Campaign, Trigger, load_fleets
from actuation.release.repository import Repository, RoleState
from actuation.rollout.audit import Decision
from actuation.signing import KeyStore
from fieldloop.catalog import TableInfo
from fieldloop.cli.main import main
from fieldloop.cli.status import (
    Commit,
    Interventions,
    RegisteredModel,
    Sources,
    campaigns_section,
    fleets_section,
    gather,
    incidents_section,
    lake_section,
    loop_closure_kpi,
    models_section,
    readiness_kpi,
    stack_section,
)
from fieldloop.lineage import ModelLineage, TableGovernance, TableLineage
from fieldloop.stack import ComponentStatus, Health

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
MODEL = "fieldloop.vehicle-longitudinal"


# in-memory sources ---------------------------------------------------------------------------
@dataclass
class FakeLake:
    listed: list[TableInfo] = field(default_factory=list)
    logs: dict[str, list[Commit]] = field(default_factory=dict)  # newest first
    telemetry: list[Interventions] | None = None

    def tables(self) -> list[TableInfo]:
        return self.listed

    def commits(self, uri: str) -> list[Commit]:
        return self.logs[uri]

    def interventions(self, since: datetime) -> list[Interventions] | None:
        return None if self.telemetry is None else [t for t in self.telemetry if t.last_hour >= since]


@dataclass
class FakeModels:
    registered: list[RegisteredModel] = field(default_factory=list)
    version_tags: dict[tuple[str, int], dict[str, str]] = field(default_factory=dict)

    def models(self) -> list[RegisteredModel]:
        return self.registered

    def tags(self, name: str, version: int) -> dict[str, str]:
        return self.version_tags.get((name, version), {})


@dataclass
class FakeRelease:
    pointers: dict[str, Any] = field(default_factory=dict)
    role_states: list[RoleState] = field(default_factory=list)
    renew_within: timedelta = timedelta(days=1)
    dir: str = "/srv/release"
    present: bool = True

    def exists(self) -> bool:
        return self.present

    def roles(self) -> list[RoleState]:
        return self.role_states

    def due(self) -> list[RoleState]:
        return [r for r in self.role_states if r.expires - NOW <= self.renew_within]

    def pointer(self, fleet: str) -> Any:
        return self.pointers.get(fleet)


@dataclass
class FakeCampaigns:
    signed: dict[str, list[Campaign]] = field(default_factory=dict)  # fleet -> newest first

    def list(self, fleet: str | None = None) -> list[Campaign]:
        return [c for f, cs in self.signed.items() if fleet in (None, f) for c in cs]


@dataclass
class FakeDecisions:
    decided: list[Decision] = field(default_factory=list)

    def rows(self, fleet: str | None = None) -> list[Decision]:
        return [d for d in self.decided if fleet is None or d.fleet == fleet]


class Broken:
    """A source whose every read fails, as a dead server or a corrupt log would."""

    dir = "/srv/release"

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise OSError(f"{name}: connection refused")

        return fail


def fleet(name: str, task: str = "vehicle-longitudinal", tenant: str | None = None) -> Any:
    return SimpleNamespace(name=name, task=task, tenant=tenant)


FLEETS = [fleet("public-cars"), fleet("acme-vans", tenant="acme-mobility"), fleet("acme-plant", "plant-anomaly")]


def pointer(version: int, stage: Any = None) -> Any:
    return SimpleNamespace(active=SimpleNamespace(model=MODEL, version=version), stage=stage)


def role(name: str, expires_in: timedelta) -> RoleState:
    return RoleState(name, 1, NOW + expires_in, ("k",), 1)


def valid_roles(*fleets: str) -> list[RoleState]:
    return [role(r, timedelta(days=30)) for r in ("root", "targets", "snapshot", "timestamp")] + [
        role(f"fleet-{f}", timedelta(days=30)) for f in fleets
    ]


def decision(action: str, at: datetime, fleet: str = "public-cars", seq: int = 1, **kw: Any) -> Decision:
    values: dict[str, Any] = {
        "rollout_id": "r1",
        "seq": seq,
        "at": at,
        "fleet": fleet,
        "model": MODEL,
        "version": 2,
        "champion_model": MODEL,
        "champion_version": 1,
        "stage": "canary",
        "stage_index": 1,
        "mode": "active",
        "share": 0.05,
        "action": action,
        "state": "running",
        "requested_by": "controller",
        "reason": "gates pass",
    }
    return Decision(**(values | kw))


def campaign(fleet: str, trigger: str, created_ago: timedelta, runs: timedelta, **kw: Any) -> Campaign:
    created = NOW - created_ago
    return Campaign(
        id=f"{fleet}-{created:%Y%m%d%H%M}-abc123",
        fleet=fleet,
        trigger=Trigger.parse(trigger),
        budget=Budget(max_per_hour=10, max_bytes_per_day=100_000),
        window_before=5,
        window_after=2,
        created_at=created,
        expires_at=created + runs,
        **kw,
    )


def table(layer: str, name: str, version: int = 3, rows: int = 10) -> TableInfo:
    return TableInfo(layer, name, f"/lake/{layer}/{name}", version, rows)


def commit(version: int, ago: timedelta, rows: int = 5, data: bool = True) -> Commit:
    return Commit(version, NOW - ago, rows, data)


# stack ------------------------------------------------------------------------------------------
def test_stack_names_the_components_down_and_the_command_that_starts_them() -> None:
    section = stack_section(
        [
            ComponentStatus("kafka", "kafka://127.0.0.1:9092", Health(True, "7 topics")),
            ComponentStatus("mlflow", "http://127.0.0.1:5000", Health(False, "not started")),
        ]
    )
    assert [(c.name, c.healthy) for c in section.components] == [("kafka", True), ("mlflow", False)]
    assert section.missing == ["mlflow not healthy: `fieldloop stack up` starts what is down"]
    assert stack_section([ComponentStatus("kafka", "k", Health(True, "ok"))]).missing == []


# lake -------------------------------------------------------------------------------------------
def test_freshness_is_the_age_of_the_newest_commit_that_changed_rows() -> None:
    lake = FakeLake(
        [table("silver", "frames"), table("gold", "dp_daily", version=0)],
        {
            # an OPTIMIZE an hour ago does not make the table fresh: its data is 5 hours old
            "/lake/silver/frames": [commit(3, timedelta(hours=1), data=False), commit(2, timedelta(hours=5))],
            "/lake/gold/dp_daily": [commit(0, timedelta(hours=2), rows=0, data=False)],
        },
    )
    section = lake_section("/lake", lake, NOW)
    frames, dp = section.tables
    assert (frames.version, frames.last_data_version, frames.age_s) == (3, 2, 5 * 3600)
    assert (dp.last_data_version, dp.last_data_at, dp.age_s) == (None, None, None)
    assert section.missing == []


def test_an_empty_lake_says_which_commands_fill_it() -> None:
    section = lake_section("/lake", FakeLake(), NOW)
    assert section.tables == []
    assert "`fieldloop ingest`" in section.missing[0]


# models -----------------------------------------------------------------------------------------
def test_models_show_each_alias_with_its_versions_verdict() -> None:
    models = FakeModels(
        [
            RegisteredModel(MODEL, {"champion": 1, "candidate": 3, "approved": 2}, 3),
            RegisteredModel("fieldloop.plant-anomaly.acme-steel", {}, 1),
        ],
        {
            (MODEL, 1): {"fieldloop.guardrail.verdict": "pass"},
            (MODEL, 2): {"fieldloop.guardrail.verdict": "pass"},
            (MODEL, 3): {"fieldloop.guardrail.verdict": "fail"},
        },
    )
    section = models_section("http://mlflow", models)
    plant, vehicle = section.models
    assert [(a.alias, a.version, a.verdict) for a in vehicle.aliases] == [
        ("candidate", 3, "fail"),
        ("approved", 2, "pass"),
        ("champion", 1, "pass"),
    ]
    assert (plant.latest_version, plant.aliases) == (1, [])
    assert "`fieldloop train" in models_section("http://mlflow", FakeModels()).missing[0]


# fleets, rollouts and readiness -----------------------------------------------------------------------
def test_readiness_counts_fleets_with_a_passing_champion_and_unexpired_roles() -> None:
    release = FakeRelease(
        {"public-cars": pointer(1), "acme-vans": pointer(2)},
        valid_roles("public-cars", "acme-vans", "acme-plant"),
    )
    models = FakeModels(
        version_tags={
            (MODEL, 1): {"fieldloop.guardrail.verdict": "pass"},
            (MODEL, 2): {"fieldloop.guardrail.verdict": "fail"},
        }
    )
    section = fleets_section(FLEETS, release, FakeDecisions(), models, NOW)
    kpi = readiness_kpi(section)
    assert kpi.value == pytest.approx(1 / 3)
    assert kpi.parts["public-cars"] == "ready"
    assert "verdict fail" in kpi.parts["acme-vans"]
    assert "nothing published" in kpi.parts["acme-plant"]


def test_an_expired_role_a_fleet_verifies_with_makes_it_not_ready_and_asks_for_a_refresh() -> None:
    roles = [*valid_roles("public-cars"), role("fleet-acme-vans", -timedelta(hours=1))]
    release = FakeRelease({"public-cars": pointer(1), "acme-vans": pointer(1)}, roles)
    models = FakeModels(version_tags={(MODEL, 1): {"fieldloop.guardrail.verdict": "pass"}})
    section = fleets_section(FLEETS[:2], release, FakeDecisions(), models, NOW)
    assert [f.expired_roles for f in section.fleets] == [[], ["fleet-acme-vans"]]
    assert any("`fieldloop release refresh`" in m for m in section.missing)
    kpi = readiness_kpi(section)
    assert (kpi.value, kpi.parts["public-cars"]) == (0.5, "ready")
    assert "fleet-acme-vans" in kpi.parts["acme-vans"]

    timestamp_expired = [role("timestamp", -timedelta(minutes=1)), *valid_roles("public-cars")[1:]]
    section = fleets_section(FLEETS[:1], FakeRelease({"public-cars": pointer(1)}, timestamp_expired), None, models, NOW)
    assert readiness_kpi(section).value == 0.0


def test_a_champion_never_judged_is_not_ready_rather_than_unknown() -> None:
    release = FakeRelease({"public-cars": pointer(1)}, valid_roles("public-cars"))
    section = fleets_section(FLEETS[:1], release, FakeDecisions(), FakeModels(), NOW)
    assert section.fleets[0].champion.verdict == "not judged"
    kpi = readiness_kpi(section)
    assert (kpi.value, kpi.parts["public-cars"]) == (0.0, f"champion {MODEL} v1: verdict not judged")


def test_readiness_is_unknown_not_zero_when_the_verdicts_cannot_be_read() -> None:
    release = FakeRelease({"public-cars": pointer(1)}, valid_roles("public-cars"))
    kpi = readiness_kpi(fleets_section(FLEETS[:1], release, FakeDecisions(), None, NOW))
    assert kpi.value is None
    assert "public-cars" in kpi.detail


def test_a_fleet_shows_its_stage_and_its_latest_rollouts_last_decision_with_figures() -> None:
    figures = {"candidate": {"devices": 2, "inferences": 400}, "champion": {"devices": 38, "inferences": 7600}}
    decisions = FakeDecisions(
        [
            decision("start", NOW - timedelta(days=3), rollout_id="r0", state="running", seq=1),
            decision("complete", NOW - timedelta(days=2), rollout_id="r0", state="complete", seq=2),
            decision("start", NOW - timedelta(hours=2), rollout_id="r1", stage="shadow", seq=3),
            decision("advance", NOW - timedelta(minutes=10), rollout_id="r1", figures=figures, seq=4),
        ]
    )
    stage = SimpleNamespace(
        rollout_id="r1", name="canary", mode="active", share=0.05, candidate=SimpleNamespace(model=MODEL, version=2)
    )
    release = FakeRelease({"public-cars": pointer(1, stage)}, valid_roles("public-cars"))
    [row] = fleets_section(FLEETS[:1], release, decisions, FakeModels(), NOW).fleets
    assert (row.stage.name, row.stage.share, row.stage.version) == ("canary", 0.05, 2)
    assert (row.rollout.id, row.rollout.state, row.rollout.stage) == ("r1", "running", "canary")
    assert row.rollout.started_at == NOW - timedelta(hours=2)
    assert (row.rollout.last.action, row.rollout.last.figures) == ("advance", figures)


def test_no_release_repository_says_how_to_create_it() -> None:
    section = fleets_section(FLEETS, FakeRelease(present=False), FakeDecisions(), FakeModels(), NOW)
    assert "`fieldloop release init`" in section.missing[0]
    assert all(f.champion is None for f in section.fleets)
    assert readiness_kpi(section).value == 0.0


def test_a_fleet_whose_pointer_cannot_be_read_does_not_hide_the_others() -> None:
    class OneRoleMissing(FakeRelease):
        def pointer(self, fleet: str) -> Any:
            if fleet == "acme-plant":
                raise LookupError(
                    "the repository has no role 'fleet-acme-plant'; run `fieldloop release init` to add it"
                )
            return super().pointer(fleet)

    release = OneRoleMissing({"public-cars": pointer(1)}, valid_roles("public-cars", "acme-vans"))
    section = fleets_section(FLEETS, release, FakeDecisions(), FakeModels(), NOW)
    assert [f.champion is not None for f in section.fleets] == [True, False, False]
    assert any(m.startswith("acme-plant:") and "`fieldloop release init`" in m for m in section.missing)


# incidents --------------------------------------------------------------------------------------
def test_incidents_are_rollbacks_pauses_quarantined_rows_and_interventions_of_the_last_day() -> None:
    since = NOW - timedelta(hours=24)
    decisions = [
        decision("rollback", NOW - timedelta(hours=1), reason="interventions over the champion's"),
        decision("pause", NOW - timedelta(hours=3), fleet="acme-vans", requested_by="cli:ops"),
        decision("rollback", NOW - timedelta(hours=30)),  # outside the window
        decision("advance", NOW - timedelta(hours=2)),  # not an incident
    ]
    lake = FakeLake(
        [table("quarantine", "frames_public"), table("quarantine", "plant_quality"), table("bronze", "frames_public")],
        {
            "/lake/quarantine/frames_public": [
                commit(4, timedelta(hours=2), rows=30),
                commit(3, timedelta(hours=3), rows=0, data=False),  # compaction
                commit(2, timedelta(hours=5), rows=12),
                commit(1, timedelta(hours=40), rows=500),  # outside the window
            ],
            "/lake/quarantine/plant_quality": [commit(1, timedelta(days=3), rows=7)],
        },
        [
            Interventions(MODEL, "2", 9, 1200, NOW - timedelta(hours=1)),
            Interventions(MODEL, "1", 0, 5000, NOW - timedelta(hours=1)),
        ],
    )
    section = incidents_section(since, decisions, lake.listed, lake)
    assert [(i.kind, i.where, i.count) for i in section.incidents] == [
        ("rollback", "public-cars", 1),
        ("interventions", f"{MODEL} v2", 9),
        ("quarantine", "quarantine/frames_public", 42),
        ("pause", "acme-vans", 1),
    ]
    assert section.missing == []


def test_a_telemetry_table_that_cannot_be_read_still_leaves_the_rollbacks_counted() -> None:
    class BadTelemetry(FakeLake):
        def interventions(self, since: datetime) -> list[Interventions] | None:
            raise OSError("gold/fleet_telemetry_hourly: corrupt checkpoint")

    rollback = decision("rollback", NOW - timedelta(hours=1))
    section = incidents_section(NOW - timedelta(hours=24), [rollback], [], BadTelemetry())
    assert [i.kind for i in section.incidents] == ["rollback"]
    assert "corrupt checkpoint" in section.missing[0]


def test_without_hourly_telemetry_the_incidents_say_interventions_were_not_counted() -> None:
    section = incidents_section(NOW - timedelta(hours=24), [], [], FakeLake())
    assert section.incidents == []
    assert "`fieldloop refine`" in section.missing[0]


# loop closure ------------------------------------------------------------------------------------
def lineage_tags(*inputs: tuple[str, int]) -> dict[str, str]:
    gov = TableGovernance("public", "vehicle-frames-public", "ap-northeast-1")  # type: ignore[arg-type]
    return ModelLineage([TableLineage.of(name, f"/lake/gold/{name}", v, gov) for name, v in inputs]).to_mlflow_tags()


def test_loop_closure_runs_from_the_newest_training_datas_commit_to_the_rollouts_completion() -> None:
    completed = NOW - timedelta(hours=1)
    decisions = [
        decision("complete", NOW - timedelta(days=5), rollout_id="r0", version=1),
        decision("start", NOW - timedelta(hours=6), rollout_id="r1"),
        decision("complete", completed, rollout_id="r1", state="complete"),
    ]
    models = FakeModels(version_tags={(MODEL, 2): lineage_tags(("frames_a", 4), ("frames_b", 1))})
    lake = FakeLake(
        logs={
            # version 4 of frames_a landed 10 h ago; frames_b's version 1, 30 h ago: the newer one counts
            "/lake/gold/frames_a": [commit(5, timedelta(hours=2)), commit(4, timedelta(hours=10))],
            "/lake/gold/frames_b": [commit(1, timedelta(hours=30))],
        }
    )
    kpi = loop_closure_kpi(decisions, models, lake)
    assert kpi.value == 9 * 3600
    assert "frames_a@v4" in kpi.detail and "r1" in kpi.detail


def test_loop_closure_is_na_with_the_reason_when_it_cannot_be_computed() -> None:
    done = [decision("complete", NOW, state="complete")]
    assert "no rollout has completed" in loop_closure_kpi([decision("start", NOW)], FakeModels(), FakeLake()).detail
    assert "no fieldloop lineage" in loop_closure_kpi(done, FakeModels(), FakeLake()).detail
    gone = FakeLake(logs={"/lake/gold/frames_a": [commit(9, timedelta(hours=1))]})  # v4 left the log
    models = FakeModels(version_tags={(MODEL, 2): lineage_tags(("frames_a", 4))})
    kpi = loop_closure_kpi(done, models, gone)
    assert kpi.value is None and "frames_a@v4 is no longer in its Delta log" in kpi.detail
    assert "MLflow" in loop_closure_kpi(done, None, gone).detail


# campaigns --------------------------------------------------------------------------------------
def test_campaigns_are_listed_per_fleet_with_their_state_as_campaign_list_shows_them() -> None:
    running = campaign("acme-vans", "ood>=0.8", timedelta(hours=1), timedelta(hours=24))
    expired = campaign("acme-vans", "fallback", timedelta(days=3), timedelta(days=1))
    stopped = campaign("public-cars", "speed_mps>20", timedelta(hours=2), timedelta(days=7), stopped=True)
    book = FakeCampaigns({"acme-vans": [running, expired], "public-cars": [stopped]})
    section = campaigns_section(FLEETS, FakeRelease(), book, NOW)
    rows = {f.fleet: f for f in section.fleets}
    assert [f.fleet for f in section.fleets] == ["public-cars", "acme-vans", "acme-plant"]
    assert (rows["acme-vans"].active, [c["state"] for c in rows["acme-vans"].campaigns]) == (1, ["active", "expired"])
    assert rows["acme-vans"].campaigns[0] == {
        "id": running.id,
        "fleet": "acme-vans",
        "state": "active",
        "trigger": "ood>=0.8",
        "kind": "ood",
        "max_per_hour": 10,
        "max_bytes_per_day": 100_000,
        "window_before": 5,
        "window_after": 2,
        "created_at": (NOW - timedelta(hours=1)).isoformat(),
        "expires_at": (NOW + timedelta(hours=23)).isoformat(),
    }
    assert (rows["public-cars"].active, rows["public-cars"].campaigns[0]["state"]) == (0, "stopped")
    assert (rows["acme-plant"].active, rows["acme-plant"].campaigns) == (0, [])
    assert section.missing == []


def test_no_campaign_says_which_command_starts_one_and_a_fleet_unreadable_is_named() -> None:
    empty = campaigns_section(FLEETS, FakeRelease(), FakeCampaigns(), NOW)
    assert [f.campaigns for f in empty.fleets] == [[], [], []]
    assert empty.missing == ["no campaign signed yet: `fieldloop campaign create --fleet F --trigger T` starts one"]

    class OneFleetBroken(FakeCampaigns):
        def list(self, fleet: str | None = None) -> list[Campaign]:
            if fleet == "acme-plant":
                raise KeyError("fleet-acme-plant")
            return super().list(fleet)

    running = campaign("acme-vans", "ood>=0.8", timedelta(hours=1), timedelta(hours=24))
    section = campaigns_section(FLEETS, FakeRelease(), OneFleetBroken({"acme-vans": [running]}), NOW)
    assert [(f.fleet, f.active) for f in section.fleets] == [("public-cars", 0), ("acme-vans", 1), ("acme-plant", None)]
    assert section.missing == ["acme-plant: its campaigns could not be read (KeyError: 'fleet-acme-plant')"]

    absent = campaigns_section(FLEETS, FakeRelease(present=False), FakeCampaigns(), NOW)
    assert [f.campaigns for f in absent.fleets] == [None, None, None]
    assert absent.missing == ["no release repository in /srv/release: `fieldloop release init` creates it"]


def test_campaigns_are_read_from_a_real_signed_repository_through_the_campaign_book(tmp_path: Any) -> None:
    """The section over the book `fieldloop campaign create` signed into (what `campaign list` reads)."""
    repo = Repository(tmp_path / "release", KeyStore(tmp_path / "home"), load_fleets(), clock=lambda: NOW)
    repo.init()
    book = CampaignBook(repo, clock=lambda: NOW - timedelta(minutes=5))
    made = book.create("acme-vans", "ood>=0.8", 10, 100_000, 5, 2, timedelta(hours=24)).campaign
    fleets = load_fleets().fleet
    section = campaigns_section(fleets, repo, CampaignBook(repo), NOW)
    rows = {f.fleet: f for f in section.fleets}
    assert set(rows) == {f.name for f in fleets}
    assert rows["acme-vans"].active == 1
    assert [(c["id"], c["state"], c["trigger"]) for c in rows["acme-vans"].campaigns] == [
        (made.id, "active", "ood>=0.8")
    ]
    assert all(r.campaigns == [] for name, r in rows.items() if name != "acme-vans")
    book.stop(made.id)
    after = {f.fleet: f for f in campaigns_section(fleets, repo, CampaignBook(repo), NOW).fleets}
    assert (after["acme-vans"].active, after["acme-vans"].campaigns[0]["state"]) == (0, "stopped")


# the whole screen ---------------------------------------------------------------------------------
SECTION_KEYS = {
    "stack": {"components", "missing"},
    "lake": {"uri", "tables", "missing"},
    "models": {"uri", "models", "missing"},
    "fleets": {"repository", "roles", "fleets", "missing"},
    "campaigns": {"fleets", "missing"},
    "incidents": {"since", "incidents", "missing"},
    "kpis": {"readiness", "incidents_24h", "loop_closure"},
}


def test_every_section_degrades_to_a_line_when_its_source_fails() -> None:
    src = Sources(
        statuses=Broken().status,
        lake_uri="/lake",
        lake=Broken(),  # type: ignore[arg-type]
        mlflow_uri="http://127.0.0.1:1",
        models=Broken(),  # type: ignore[arg-type]
        fleets=FLEETS,
        release=Broken(),  # type: ignore[arg-type]
        decisions=Broken(),  # type: ignore[arg-type]
        campaigns=Broken(),  # type: ignore[arg-type]
    )
    status = gather(src, NOW).as_dict()
    assert {k: set(v) for k, v in status.items() if k in SECTION_KEYS} == SECTION_KEYS
    for name in ("stack", "lake", "models", "fleets", "campaigns", "incidents"):
        assert "connection refused" in " ".join(status[name]["missing"]), name
    assert status["campaigns"]["fleets"] == []
    assert status["kpis"]["readiness"]["value"] is None
    assert status["kpis"]["loop_closure"]["value"] is None


def test_json_shape_of_a_healthy_loop() -> None:
    src = Sources(
        statuses=lambda: [ComponentStatus("mlflow", "http://m", Health(True, "ok"))],
        lake_uri="/lake",
        lake=FakeLake([table("bronze", "frames")], {"/lake/bronze/frames": [commit(3, timedelta(minutes=5))]}, []),
        mlflow_uri="http://m",
        models=FakeModels(
            [RegisteredModel(MODEL, {"champion": 1}, 1)], {(MODEL, 1): {"fieldloop.guardrail.verdict": "pass"}}
        ),
        fleets=FLEETS[:1],
        release=FakeRelease({"public-cars": pointer(1)}, valid_roles("public-cars")),
        decisions=FakeDecisions(),
        campaigns=FakeCampaigns(
            {"public-cars": [campaign("public-cars", "fallback", timedelta(hours=1), timedelta(hours=24))]}
        ),
    )
    status = json.loads(json.dumps(gather(src, NOW).as_dict()))
    assert status["generated_at"] == NOW.isoformat()
    assert status["lake"]["tables"][0] == {
        "layer": "bronze",
        "name": "frames",
        "version": 3,
        "rows": 10,
        "last_data_version": 3,
        "last_data_at": (NOW - timedelta(minutes=5)).isoformat(),
        "age_s": 300.0,
    }
    assert status["models"]["models"] == [
        {"name": MODEL, "latest_version": 1, "aliases": [{"alias": "champion", "version": 1, "verdict": "pass"}]}
    ]
    [f] = status["fleets"]["fleets"]
    assert set(f) == {"name", "task", "tenant", "champion", "stage", "rollout", "expired_roles"}
    assert f["champion"] == {"model": MODEL, "version": 1, "verdict": "pass"}
    assert status["kpis"]["readiness"] == {
        "value": 1.0,
        "unit": "share",
        "detail": "1 of 1 fleets ready",
        "parts": {"public-cars": "ready"},
    }
    assert status["kpis"]["incidents_24h"]["value"] == 0
    [fc] = status["campaigns"]["fleets"]
    assert (set(fc), fc["fleet"], fc["active"]) == ({"fleet", "active", "campaigns"}, "public-cars", 1)
    assert (fc["campaigns"][0]["trigger"], fc["campaigns"][0]["state"]) == ("fallback", "active")
    assert status["campaigns"]["missing"] == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_command_answers_on_an_empty_home_and_exits_0(tmp_path: Any) -> None:
    ports = {
        f"FIELDLOOP_{k}_PORT": str(_free_port()) for k in ("KAFKA", "KAFKA_CONTROLLER", "MLFLOW", "AIRFLOW", "RELEASE")
    }
    env = {"FIELDLOOP_HOME": str(tmp_path), **ports}
    result = CliRunner().invoke(main, ["status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert not any(c["healthy"] for c in status["stack"]["components"])
    assert "`fieldloop stack up --only mlflow`" in status["models"]["missing"][0]
    assert any("`fieldloop release init`" in m for m in status["fleets"]["missing"])
    assert "`fieldloop ingest`" in status["lake"]["missing"][0]
    screen = CliRunner().invoke(main, ["status"], env=env)
    assert screen.exit_code == 0, screen.output
    for heading in ("stack", "lake", "models", "fleets & rollouts", "campaigns", "incidents (24 h)", "KPIs"):
        assert f"\n{heading}" in screen.output
    assert any("`fieldloop release init`" in m for m in status["campaigns"]["missing"])
    assert "public-cars: not read" in screen.output


def test_an_invalid_config_is_the_usual_error() -> None:
    result = CliRunner().invoke(main, ["status"], env={"FIELDLOOP_SITE_REGION": "tokyo"})
    assert result.exit_code == 1
