"""Collection campaigns: the trigger language, the budget, expiry, and the device that sends a
window only while a verified campaign of its fleet asks for it, on its own tenant's stream.

The agent reads the campaigns from a repository of our own (tests/tuf_repository.py), signed by
the fleet's role like its release pointer; the records go to a sink in memory, and the edge
SDK's admission rule decides which contracts a device may send on.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastavro.validation import validate as avro_validate
from pydantic import ValidationError

from actuation.agent import Agent, DeviceConfig, provision
from actuation.agent.campaigns import Collector, Inference, Ledger, hard_case_contract
from actuation.agent.telemetry import MemorySink, device_contracts
from actuation.contract import Budget, Campaign, Campaigns, Trigger, campaigns_path
from fieldloop.wire import default_registry
from ingestion._internal.admission import admit
from ingestion.errors import RefusedError
from tests.tuf_repository import BASE_URL, MemoryFetcher, ReleaseRepository, tiny_model

T0 = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
SIGNALS = ["speed_mps", "accel_mps2", "brake"]


class Clock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta).total_seconds()


def campaign(
    trigger: str = "speed_mps>20",
    *,
    id: str = "c1",
    fleet: str = "public-cars",
    per_hour: int = 100,
    bytes_per_day: int = 10_000_000,
    before: int = 1,
    after: int = 0,
    expires: timedelta = timedelta(hours=24),
    stopped: bool = False,
) -> Campaign:
    return Campaign(
        id=id,
        fleet=fleet,
        trigger=Trigger.parse(trigger),
        budget=Budget(max_per_hour=per_hour, max_bytes_per_day=bytes_per_day),
        window_before=before,
        window_after=after,
        created_at=T0 - timedelta(minutes=1),
        expires_at=T0 + expires,
        stopped=stopped,
    )


def inference(ts: int = 0, ood: float | None = 0.1, reason: str | None = None) -> Inference:
    return Inference(ts, "fieldloop.vehicle-longitudinal", "1", ood, None, reason is not None, reason, ["a"], [0.5])


def collector(tmp_path: Path, clock: Clock, *campaigns: Campaign, tenant: str | None = None) -> Collector:
    c = Collector("car-1", "public-cars", tenant, SIGNALS, MemorySink(), Ledger.load(tmp_path / "budget.json"), clock)
    c.follow(Campaigns(fleet="public-cars", issued_at=T0, campaigns=list(campaigns)))
    return c


# -- the trigger -------------------------------------------------------------------------------
def test_a_trigger_is_terms_joined_by_and_or_and_its_kind_is_the_model_figure_it_names() -> None:
    assert Trigger.parse("ood>=0.8").kind == "ood"
    assert Trigger.parse("disagreement > 0.3").kind == "disagreement"
    assert Trigger.parse("fallback").kind == "fallback"
    t = Trigger.parse("speed_mps>20 and brake>=0.5 or accel_mps2<-3")
    assert t.kind == "signal" and t.signals == ["accel_mps2", "brake", "speed_mps"]
    assert [[str(c) for c in g] for g in t.any_of] == [["speed_mps>20", "brake>=0.5"], ["accel_mps2<-3"]]
    assert t.fires({"speed_mps": 25, "brake": 0.6, "accel_mps2": 0})
    assert not t.fires({"speed_mps": 25, "brake": 0.1, "accel_mps2": 0})
    assert t.fires({"speed_mps": 0, "brake": 0, "accel_mps2": -4})
    assert not t.fires({"speed_mps": float("nan"), "brake": 0.6})  # NaN or missing never holds
    assert Trigger.parse("perception.vehicles>=3").signals == ["perception.vehicles"]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "the trigger is empty"),
        ("ood>=", "write '<signal> <op> <number>'"),
        ("ood>=abc", "'abc' is not a number"),
        ("ood>=2", "an OOD score lies in [0, 1]"),
        ("speed_mps == 3", "write '<signal> <op> <number>'"),
        ("__import__('os').system('x')>1", "write '<signal> <op> <number>'"),
        ("Speed>1", "'Speed' is not a signal name"),
        ("speed_mps>1 and", "'and' needs a term on both sides"),
        ("ood>0.5 and disagreement>0.1", "name one model figure"),
    ],
)
def test_a_bad_trigger_is_refused_saying_which_term_and_why(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=None) as e:
        Trigger.parse(text)
    assert says in str(e.value)


def test_a_campaign_needs_a_positive_budget_and_an_expiry_after_its_creation() -> None:
    with pytest.raises(ValidationError, match="greater than 0"):
        Budget(max_per_hour=0, max_bytes_per_day=10)
    with pytest.raises(ValidationError, match="expires"):
        campaign(expires=timedelta(hours=-1))
    assert campaign().active(T0) and not campaign().active(T0 + timedelta(hours=24))
    assert not campaign(stopped=True).active(T0)
    assert campaigns_path("acme-vans") == "acme-vans/campaigns.json"


# -- the collector -----------------------------------------------------------------------------
def test_a_window_holds_the_frames_before_and_after_the_trigger_as_a_valid_hard_cases_record(
    tmp_path: Path,
) -> None:
    c = collector(tmp_path, Clock(), campaign(before=3, after=2))
    for k in range(8):  # the trigger is the 5th frame (speed 25): frames 2..6 are sent
        c.observe([25.0 if k == 4 else float(k), 0.0, float("nan")], inference(ts=k))
    (contract, device, record), = c.sink.records  # fmt: skip
    assert (contract, device) == ("hard-cases-public", "car-1")
    assert record["frames"] == [[2.0, 0.0, None], [3.0, 0.0, None], [25.0, 0.0, None], [5.0, 0.0, None],
                                [6.0, 0.0, None]]  # fmt: skip
    assert record["trigger_index"] == 2 and record["ts"] == 4 and record["signals"] == SIGNALS
    assert (record["campaign_id"], record["trigger"], record["trigger_kind"]) == ("c1", "speed_mps>20", "signal")
    schema = default_registry().get("hard_cases")
    assert avro_validate(record, schema.parsed, raise_errors=True, strict=True)


def test_the_budget_allows_n_windows_per_hour_and_resets_the_next_hour_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    clock = Clock()
    c = collector(tmp_path, clock, campaign(per_hour=2))
    for _ in range(5):
        c.observe([30.0, 0.0, 0.0], inference())
    assert len(c.sink.records) == 2 and c.skipped == {"budget": 3}
    restarted = collector(tmp_path, clock, campaign(per_hour=2))  # the counters are on disk
    restarted.observe([30.0, 0.0, 0.0], inference())
    assert restarted.sink.records == []
    clock.advance(minutes=31)  # 10:01: a new clock hour
    for _ in range(3):
        restarted.observe([30.0, 0.0, 0.0], inference())
    assert len(restarted.sink.records) == 2
    restarted.follow(Campaigns(fleet="public-cars", issued_at=T0, campaigns=[]))  # no longer signed
    assert restarted.ledger.spent == {}


def test_the_bytes_per_day_budget_stops_sending_until_the_next_utc_day(tmp_path: Path) -> None:
    clock = Clock()
    probe = collector(tmp_path / "probe", clock, campaign())
    probe.observe([30.0, 0.0, 0.0], inference())
    size = len(json.dumps(probe.sink.records[0][2], separators=(",", ":")))
    c = collector(tmp_path, clock, campaign(bytes_per_day=3 * size))
    for _ in range(5):
        c.observe([30.0, 0.0, 0.0], inference())
        clock.advance(hours=1)  # the hourly budget is never what stops it
    assert len(c.sink.records) == 3
    clock.now = datetime(2026, 12, 8, 0, 5, tzinfo=UTC).timestamp()
    c.observe([30.0, 0.0, 0.0], inference())
    assert len(c.sink.records) == 4


def test_expired_stopped_and_other_fleets_campaigns_send_nothing(tmp_path: Path, caplog) -> None:
    clock = Clock()
    c = collector(
        tmp_path, clock, campaign(id="stopped", stopped=True), campaign(id="other", fleet="acme-vans"),
        campaign(id="short", expires=timedelta(minutes=5)),
    )  # fmt: skip
    assert "campaign other is for fleet acme-vans, not public-cars: ignored" in caplog.text
    assert [x.id for x in c.active()] == ["short"]
    clock.advance(minutes=6)
    c.observe([30.0, 0.0, 0.0], inference())
    assert c.sink.records == [] and c.active() == []


def test_model_triggers_read_the_inference_not_the_frame(tmp_path: Path) -> None:
    c = collector(tmp_path, Clock(), campaign("ood>=0.8", id="ood"), campaign("fallback", id="fb"))
    c.observe([1.0, 0.0, 0.0], inference(ood=0.5))
    c.observe([1.0, 0.0, 0.0], inference(ood=0.9))
    c.observe([1.0, 0.0, 0.0], inference(ood=0.1, reason="envelope"))
    assert [(r[2]["campaign_id"], r[2]["intervention"]) for r in c.sink.records] == [("ood", False), ("fb", True)]


# -- tenants -----------------------------------------------------------------------------------
def test_a_device_sends_hard_cases_only_on_its_own_tenants_contract() -> None:
    assert hard_case_contract(None) == "hard-cases-public"
    assert hard_case_contract("acme-mobility") == "hard-cases-acme-mobility"
    registry = default_registry()
    c = Collector("van-1", "acme-vans", "acme-mobility", SIGNALS, MemorySink(), Ledger(Path("/nonexistent")), Clock())
    record = c.record(c_window(c))
    acme, public = device_contracts("acme-mobility"), device_contracts(None)
    assert set(acme) == {"fleet-telemetry", "hard-cases-acme-mobility"}
    assert set(public) == {"fleet-telemetry", "hard-cases-public"}
    assert acme["hard-cases-acme-mobility"].data_class == "restricted"
    assert acme["hard-cases-acme-mobility"].tenant == "acme-mobility"
    admit(acme, registry, "hard-cases-acme-mobility", "van-1", record, 1 << 20)
    for contracts, other in ((acme, "hard-cases-public"), (public, "hard-cases-acme-mobility")):
        with pytest.raises(RefusedError) as e:
            admit(contracts, registry, other, "van-1", record, 1 << 20)
        assert e.value.reason == "no-contract"


def c_window(c: Collector):
    from actuation.agent.campaigns import _Window

    return _Window(campaign(fleet="acme-vans"), inference(), [[1.0, 2.0, 3.0]], 0, 0)


# -- the agent, against a signed repository ----------------------------------------------------
def agent_for(tmp_path: Path, repo: ReleaseRepository, clock: Clock, fleet: str = "public-cars") -> Agent:
    tenant = "acme-mobility" if fleet == "acme-vans" else None
    config = DeviceConfig(device_id="dev-1", fleet=fleet, tenant=tenant, repo_url=BASE_URL, task="vehicle-longitudinal")
    return Agent(provision(tmp_path / "dev", config, repo.root_bytes), fetcher=MemoryFetcher(repo), clock=clock)


def frame(speed: float) -> dict:
    return {
        "speed_mps": speed, "accel_mps2": 0.1, "brake": 0.0, "steering_deg": 1.0, "yaw_rate_dps": 0.1,
        "vin": "JT123", "lat": 35.6, "lon": 139.7,
        "perception": {"vehicles": 2, "pedestrians": 0, "cyclists": 0},
    }  # fmt: skip


def hard_cases(agent: Agent) -> list[dict]:
    return [r for c, _, r in agent.telemetry.records if c.startswith("hard-cases-")]


def test_the_agent_sends_windows_only_while_its_fleets_signed_campaign_asks(tmp_path: Path) -> None:
    repo, clock = ReleaseRepository(tmp_path / "cloud"), Clock()
    repo.release("public-cars", 1, tiny_model())
    agent = agent_for(tmp_path, repo, clock)
    agent.update()
    for k in range(12):
        agent.infer(frame(30.0 if k == 11 else 10.0))
    assert hard_cases(agent) == []  # no campaign: nothing leaves
    repo.campaigns(Campaigns(fleet="public-cars", issued_at=T0, campaigns=[campaign(before=3, after=1)]))
    assert agent.update().state == "up-to-date"  # the model is untouched by a campaign
    for speed in (10.0, 10.0, 10.0, 30.0, 10.0, 10.0):  # the ring fills once a campaign is active
        agent.infer(frame(speed))
    (sent,) = hard_cases(agent)
    assert [f[0] for f in sent["frames"]] == [10.0, 10.0, 30.0, 10.0] and sent["model_version"] == "1"
    assert len(sent["frames"][0]) == 8  # the layout's signals and extras; never the vin or position
    assert len(sent["outputs"]) == len(sent["output_names"]) > 0
    assert agent.summary()["campaigns"] == {"active": ["c1"], "sent": 1, "first_sent_at": clock.now, "skipped": {}}
    stopped = campaign(before=3, after=1).model_copy(update={"stopped": True})
    repo.campaigns(Campaigns(fleet="public-cars", issued_at=T0, campaigns=[stopped]))
    agent.update()
    for _ in range(3):
        agent.infer(frame(30.0))
    assert len(hard_cases(agent)) == 1


def test_a_tampered_campaigns_target_is_refused_and_collects_nothing(tmp_path: Path) -> None:
    repo, clock = ReleaseRepository(tmp_path / "cloud"), Clock()
    repo.release("public-cars", 1, tiny_model())
    repo.campaigns(Campaigns(fleet="public-cars", issued_at=T0, campaigns=[campaign()]))
    url = repo.target_url(campaigns_path("public-cars"))
    doc = json.loads(repo.files[url])
    doc["campaigns"][0]["budget"]["max_per_hour"] = 1_000_000
    repo.files[url] = json.dumps(doc).encode()
    agent = agent_for(tmp_path, repo, clock)
    assert agent.update().active == "fieldloop.vehicle-longitudinal@1"  # the release is still taken
    assert agent.collector.campaigns == [] and agent.stats.errors["refused:target"] == 1
    for _ in range(3):
        agent.infer(frame(30.0))
    assert hard_cases(agent) == []


def test_an_acme_van_sends_on_acme_mobilitys_restricted_stream(tmp_path: Path) -> None:
    repo, clock = ReleaseRepository(tmp_path / "cloud", fleets=("public-cars", "acme-vans")), Clock()
    repo.campaigns(Campaigns(fleet="acme-vans", issued_at=T0, campaigns=[campaign(fleet="acme-vans")]))
    agent = agent_for(tmp_path, repo, clock, fleet="acme-vans")
    assert agent.update().state == "no-release"  # campaigns are followed even before a release
    agent.infer(frame(30.0))
    assert [c for c, _, _ in agent.telemetry.records] == ["fleet-telemetry", "hard-cases-acme-mobility"]
    assert hard_cases(agent)[0]["model_name"] == "fallback" and hard_cases(agent)[0]["outputs"] == []
