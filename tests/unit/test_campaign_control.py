"""`fieldloop campaign create|list|stop` and the campaign book over a real release repository on
disk: what it signs is a new version of the fleet's role, the pointer untouched; bad requests are
one line naming what is wrong."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from actuation.campaigns import CampaignBook, parse_duration
from actuation.contract import campaigns_path, fleet_role
from actuation.errors import CampaignError
from actuation.release.repository import Repository
from fieldloop.cli.main import main


def test_create_signs_a_new_version_of_the_fleets_role_and_only_the_fleets_role(repo: Repository, clock) -> None:
    book = CampaignBook(repo, clock)
    before = {r.name: r.version for r in repo.roles()}
    done = book.create("acme-vans", "ood>=0.8", 10, 100_000, 5, 2, timedelta(hours=24))
    assert done.signed and done.campaign.fleet == "acme-vans" and done.campaign.trigger.kind == "ood"
    after = {r.name: r.version for r in repo.roles()}
    changed = {name for name in after if after[name] != before[name]}
    assert changed == {fleet_role("acme-vans"), "snapshot", "timestamp"}
    assert repo.pointer("acme-vans") is None  # no release was touched
    signed = repo.campaigns("acme-vans")
    assert [c.id for c in signed.campaigns] == [done.campaign.id]
    info = repo.targets(fleet_role("acme-vans")).signed.targets[campaigns_path("acme-vans")]
    assert info.unrecognized_fields["custom"] == {"kind": "campaigns"}
    again = book.create("acme-vans", "ood>=0.8", 10, 100_000, 5, 2, timedelta(hours=24))
    assert not again.signed and again.campaign.id == done.campaign.id  # idempotent while it runs
    assert {r.name: r.version for r in repo.roles()} == after


def test_stop_keeps_the_campaign_in_the_list_marked_stopped_and_is_idempotent(repo: Repository, clock) -> None:
    book = CampaignBook(repo, clock)
    a = book.create("public-cars", "speed_mps>25", expires_in=timedelta(hours=1)).campaign
    clock.now += timedelta(minutes=1)
    b = book.create("public-cars", "fallback").campaign
    stopped, changed = book.stop(a.id)
    assert changed and stopped.stopped and stopped.stopped_at == clock.now
    assert book.stop(a.id) == (stopped, False)
    listed = book.list("public-cars")
    assert [(c.id, c.stopped) for c in listed] == [(b.id, False), (a.id, True)]
    assert [c.id for c in listed if c.active(clock.now)] == [b.id]


@pytest.mark.parametrize(
    ("kwargs", "field", "says"),
    [
        ({"fleet": "mars-rovers"}, "fleet", "no fleet 'mars-rovers'"),
        ({"trigger": "ood>=1.5"}, "trigger", "an OOD score lies in [0, 1]"),
        ({"trigger": "value>3"}, "trigger", "value is not a signal of fleet public-cars's frames"),
        ({"max_per_hour": 0}, "budget", "must be > 0"),
        ({"max_bytes_per_day": -1}, "budget", "must be > 0"),
        ({"expires_in": timedelta(hours=-1)}, "expires", "in the past"),
        ({"window_before": 0}, "window", "1-100 frames before"),
    ],
)
def test_a_bad_campaign_is_refused_naming_what_is_wrong(repo: Repository, clock, kwargs, field, says) -> None:
    args = {"fleet": "public-cars", "trigger": "ood>=0.8", **kwargs}
    with pytest.raises(CampaignError) as e:
        CampaignBook(repo, clock).create(**args)
    assert e.value.field == field and says in str(e.value)
    assert repo.campaigns("public-cars") is None


def test_a_plant_fleets_trigger_reads_its_own_signals(repo: Repository, clock) -> None:
    done = CampaignBook(repo, clock).create("acme-plant", "value>1500")
    assert done.campaign.trigger.signals == ["value"]


def test_durations() -> None:
    assert parse_duration("24h") == timedelta(hours=24) and parse_duration("7d") == timedelta(days=7)
    with pytest.raises(CampaignError, match="a number and a unit"):
        parse_duration("tomorrow")


def test_the_cli_creates_lists_and_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIELDLOOP_HOME", str(tmp_path))
    monkeypatch.delenv("FIELDLOOP_RELEASE_S3", raising=False)
    runner = CliRunner()
    assert runner.invoke(main, ["release", "init"]).exit_code == 0
    made = runner.invoke(main, ["campaign", "create", "--fleet", "acme-vans", "--trigger", "fallback", "--json"])
    assert made.exit_code == 0, made.output
    created = json.loads(made.output)
    assert created["signed"] and created["state"] == "active" and created["kind"] == "fallback"
    listed = json.loads(runner.invoke(main, ["campaign", "list", "--fleet", "acme-vans", "--json"]).output)
    assert [r["id"] for r in listed] == [created["id"]]
    stopped = runner.invoke(main, ["campaign", "stop", "--id", created["id"], "--json"])
    assert json.loads(stopped.output)["state"] == "stopped"
    bad = runner.invoke(main, ["campaign", "create", "--fleet", "acme-vans", "--trigger", "ood>=x"])
    assert bad.exit_code == 1 and "'x' is not a number" in bad.output
    missing = runner.invoke(main, ["campaign", "stop", "--id", "nope"])
    assert missing.exit_code == 1 and "no campaign 'nope'" in missing.output


def test_every_fleets_policy_campaign_signs_for_its_task_and_asking_twice_at_once_signs_once(
    repo: Repository, clock
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from actuation.campaigns.book import ask_for_hard_cases
    from actuation.rollout.policy import load_policy

    for fleet in repo.fleets.fleet:
        wanted = load_policy(fleet.name).campaign
        if wanted is None:  # the plant's label never leaves the device: no hard-case table to fill
            assert fleet.task == "plant-anomaly" and ask_for_hard_cases(repo, fleet.name, clock) is None
            continue
        with ThreadPoolExecutor(2) as pool:  # a publish and a rollout start at the same moment
            asked = list(pool.map(lambda name: ask_for_hard_cases(repo, name, clock), [fleet.name] * 2))
        assert sorted(a.signed for a in asked) == [False, True]
        (signed,) = repo.campaigns(fleet.name).campaigns
        assert signed.id == asked[0].campaign.id == asked[1].campaign.id
        assert (signed.trigger.expression, signed.window_before) == (wanted.trigger, wanted.window_before)
        assert signed.expires_at - signed.created_at == parse_duration(wanted.expires)
