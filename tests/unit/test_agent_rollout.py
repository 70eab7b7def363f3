"""The device side of a staged rollout, against a repository of our own (tests/tuf_repository.py).

The fleet's format-2 pointer names its champion and a stage: in an active stage the cohort
(:func:`~actuation.contract.cohort_position` below the share) runs the candidate and no other
device fetches it; a rollback pointer returns a canary to the champion kept in its other slot
in one cycle, downloading nothing; in a shadow stage the cohort runs the candidate beside the
champion on the same inputs, commands exactly what the champion commands and reports how far
the two disagree. A candidate wrong for the device is refused in either mode, and the device
runs on.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastavro.validation import validate as avro_validate

from actuation.agent import Agent, DeviceConfig, provision
from actuation.agent.agent import REFUSED, UP_TO_DATE, UPDATED
from actuation.agent.hardcases import DISAGREEMENT, HardCase, HardCases
from actuation.contract import Release, cohort_position
from fieldloop.wire import default_registry
from tests.tuf_repository import BASE_URL, EdgeFiles, MemoryFetcher, ReleaseRepository, tiny_model, verdict_for

MODEL = "fieldloop.vehicle-longitudinal"
FLEET = "public-cars"
ROLLOUT = "rollout-1"


@pytest.fixture(scope="module")
def champion_edge() -> EdgeFiles:
    return tiny_model()


@pytest.fixture(scope="module")
def candidate_edge() -> EdgeFiles:
    return tiny_model(accel_gain=0.5, ood_bias=-2.0)


@pytest.fixture()
def repo(tmp_path: Path) -> ReleaseRepository:
    return ReleaseRepository(tmp_path / "cloud", fleets=(FLEET, "acme-vans"))


@pytest.fixture()
def releases(repo: ReleaseRepository, champion_edge: EdgeFiles, candidate_edge: EdgeFiles) -> tuple[Release, Release]:
    """The champion (v1, the fleet's release) and the candidate's files (v2, signed, not pointed at)."""
    champion = repo.release(FLEET, 1, champion_edge)
    candidate = repo.release(FLEET, 2, candidate_edge, publish=False)
    repo.rollback(FLEET, champion)  # the pointer names the champion alone again
    return champion, candidate


def device_ids(share: float, inside: bool, n: int) -> list[str]:
    """``n`` device ids that fall inside (or outside) the rollout's cohort of ``share``."""
    ids = (f"car-{i}" for i in range(10_000))
    return [d for d in ids if (cohort_position(ROLLOUT, d) < share) == inside][:n]


def make_agent(tmp_path: Path, repo: ReleaseRepository, device_id: str, **kwargs) -> Agent:
    config = DeviceConfig(device_id=device_id, fleet=FLEET, repo_url=BASE_URL, task="vehicle-longitudinal")
    device = provision(tmp_path / "devices" / device_id, config, repo.root_bytes)
    return Agent(device, fetcher=MemoryFetcher(repo), **kwargs)


def running_champion(tmp_path: Path, repo: ReleaseRepository, device_id: str, **kwargs) -> Agent:
    agent = make_agent(tmp_path, repo, device_id, **kwargs)
    assert agent.update().state == UPDATED and agent.active == f"{MODEL}@1"
    return agent


def frames(n: int) -> list[dict]:
    """Frames whose acceleration moves, so the candidate (gain 0.5) and the champion (gain 1) differ."""
    return [
        {
            "speed_mps": 10.0,
            "accel_mps2": 0.2 * (k % 10) - 0.6,
            "brake": 0.0,
            "steering_deg": 1.0,
            "yaw_rate_dps": 0.1,
            "perception": {"vehicles": 2, "pedestrians": 0, "cyclists": 0},
        }
        for k in range(n)
    ]


def fresh_fetcher(agent: Agent) -> MemoryFetcher:
    agent.fetcher = MemoryFetcher(agent.fetcher.repo)
    return agent.fetcher


def assert_valid_v3(records: list[dict]) -> None:
    schema = default_registry().get("telemetry")
    assert schema.version == 3
    for record in records:
        assert avro_validate(record, schema.parsed, raise_errors=True, strict=True)


# -- active stages -----------------------------------------------------------------------------
def test_only_the_active_stages_cohort_runs_the_candidate_and_no_other_device_fetches_it(
    tmp_path: Path, repo: ReleaseRepository, releases: tuple[Release, Release]
) -> None:
    champion, candidate = releases
    inside, outside = device_ids(0.3, True, 8), device_ids(0.3, False, 12)
    agents = {d: running_champion(tmp_path, repo, d) for d in inside + outside}
    repo.stage(FLEET, champion, candidate, mode="active", share=0.3, rollout_id=ROLLOUT, name="canary", index=1)
    for device_id, agent in agents.items():
        fetcher = fresh_fetcher(agent)
        result = agent.update()
        in_cohort = cohort_position(ROLLOUT, device_id) < 0.3
        assert agent.active == (f"{MODEL}@2" if in_cohort else f"{MODEL}@1"), device_id
        assert result.state == (UPDATED if in_cohort else UP_TO_DATE)
        if not in_cohort:
            assert fetcher.target_downloads == []  # not even the candidate's manifest
        stage = agent.summary()["stage"]
        assert (stage["rollout_id"], stage["name"], stage["mode"], stage["in_cohort"]) == (
            ROLLOUT, "canary", "active", in_cohort,
        )  # fmt: skip
        assert stage["candidate"] == f"{MODEL}@2" and stage["shadow"] is None
        agent.infer(frames(1)[0])
        assert agent.telemetry.records[-1][2]["model_version"] == ("2" if in_cohort else "1")


def test_a_fresh_device_in_the_cohort_installs_the_candidate_and_one_outside_the_champion(
    tmp_path: Path, repo: ReleaseRepository, releases: tuple[Release, Release]
) -> None:
    champion, candidate = releases
    repo.stage(FLEET, champion, candidate, mode="active", share=0.5, rollout_id=ROLLOUT)
    (inside,), (outside,) = device_ids(0.5, True, 1), device_ids(0.5, False, 1)
    assert make_agent(tmp_path, repo, inside).update().active == f"{MODEL}@2"
    agent = make_agent(tmp_path, repo, outside)
    assert agent.update().active == f"{MODEL}@1"
    assert not any("@2." in r for r in agent.fetcher.requests)


def test_a_rollback_returns_the_canary_to_the_champion_in_one_cycle_without_a_download(
    tmp_path: Path, repo: ReleaseRepository, releases: tuple[Release, Release]
) -> None:
    champion, candidate = releases
    (device_id,) = device_ids(0.1, True, 1)
    agent = running_champion(tmp_path, repo, device_id)
    repo.stage(FLEET, champion, candidate, mode="active", share=0.1, rollout_id=ROLLOUT, name="canary")
    assert agent.update().active == f"{MODEL}@2"
    for frame in frames(12):
        agent.infer(frame)
    repo.rollback(FLEET, champion)  # the controller halted the rollout
    for cached in agent.device.downloads.iterdir():  # the revert does not rely on the download cache
        cached.unlink()
    fetcher = fresh_fetcher(agent)
    result = agent.update()
    assert (result.state, result.active, result.reverted) == (UPDATED, f"{MODEL}@1", True)
    assert fetcher.target_downloads == []  # the pointer only: the champion was still in slot a
    assert "nothing downloaded" in result.detail
    state = json.loads(agent.device.state.read_text())
    assert state["active"] == "a" and state["slots"]["b"]["release"]["version"] == 2  # the candidate stays on disk
    decision = agent.infer(frames(1)[0])
    assert decision.reason is None and agent.telemetry.records[-1][2]["model_version"] == "1"
    assert agent.summary()["stage"] is None
    assert Agent(agent.device, fetcher=MemoryFetcher(repo)).active == f"{MODEL}@1"  # committed: a restart agrees


def test_a_candidate_damaged_in_its_slot_is_not_reverted_to_but_installed_again(
    tmp_path: Path, repo: ReleaseRepository, releases: tuple[Release, Release]
) -> None:
    champion, candidate = releases
    (device_id,) = device_ids(0.5, True, 1)
    agent = running_champion(tmp_path, repo, device_id)
    repo.stage(FLEET, champion, candidate, mode="active", share=0.5, rollout_id=ROLLOUT)
    agent.update()
    repo.rollback(FLEET, champion)
    (agent.device.slots / "a" / "model.onnx").write_bytes(b"bit rot")  # the champion's slot, damaged
    result = agent.update()
    assert (result.state, result.active, result.reverted) == (UPDATED, f"{MODEL}@1", False)
    assert agent.infer(frames(1)[0]) is not None


# -- shadow stages -----------------------------------------------------------------------------
def test_a_shadow_device_commands_exactly_what_the_champion_commands_and_reports_the_shadow(
    tmp_path: Path, repo: ReleaseRepository, releases: tuple[Release, Release]
) -> None:
    champion, candidate = releases
    (device_id,) = device_ids(0.25, True, 1)
    (reference_id,) = device_ids(0.25, False, 1)
    shadowing = running_champion(tmp_path, repo, device_id, disagreement_threshold=0.5)
    reference = running_champion(tmp_path, repo, reference_id)
    repo.stage(FLEET, champion, candidate, mode="shadow", share=0.25, rollout_id=ROLLOUT, name="shadow")
    result = shadowing.update()
    assert (result.state, result.shadow) == (UP_TO_DATE, f"installed {MODEL}@2")
    fetcher = fresh_fetcher(reference)
    assert reference.update().shadow is None and reference.shadow is None
    assert fetcher.target_downloads == []  # outside the cohort: the candidate is never fetched
    assert (shadowing.device.slots / "shadow" / "model.onnx").exists()
    assert set(shadowing.slots.state().slots) == {"a"}  # never in the A/B state
    assert shadowing.fetcher.target_downloads  # it did download the candidate

    run = frames(40)
    ours = [shadowing.infer(f) for f in run]
    theirs = [reference.infer(f) for f in run]
    assert ours == theirs  # the same commands, proposals, OOD scores and reasons as the champion alone
    records = [r[2] for r in shadowing.telemetry.records]
    assert_valid_v3(records + [r[2] for r in reference.telemetry.records])
    assert {r["model_version"] for r in records} == {"1"} and {r["fleet"] for r in records} == {FLEET}
    warm, live = records[:9], records[9:]
    assert all(r["shadow_version"] is None and r["shadow_disagreement"] is None for r in warm)  # no model input yet
    for record, frame, decision in zip(live, run[9:], ours[9:], strict=True):
        assert record["shadow_version"] == "2" and record["error"] is None
        # champion: accel, candidate: 0.5 x accel (int8 weights, tiny noise from the other features)
        assert record["shadow_disagreement"] == pytest.approx(0.5 * abs(frame["accel_mps2"]), abs=0.05)
        assert record["shadow_ood_score"] == pytest.approx(0.119, abs=0.01)  # sigmoid(-2), the candidate's
        assert record["ood_score"] == pytest.approx(decision.ood_score)  # the champion's, sigmoid(-3)
    assert all(r["shadow_version"] is None for r in (r[2] for r in reference.telemetry.records))

    summary = shadowing.summary()
    assert summary["shadow"] == f"{MODEL}@2" and summary["active"] == f"{MODEL}@1"
    assert summary["stage"]["mode"] == "shadow" and summary["stage"]["in_cohort"] is True
    figures = summary["window"]["shadow"]
    disagreements = [r["shadow_disagreement"] for r in live]
    assert figures["inferences"] == len(live)
    assert figures["disagreement_rate"] == pytest.approx(sum(d > 0.5 for d in disagreements) / len(live))
    assert 0 < figures["disagreement_rate"] < 1 and figures["disagreement_max"] == pytest.approx(max(disagreements))


def test_a_shadow_is_dropped_when_the_pointer_stops_naming_it_and_its_download_serves_the_active_stage(
    tmp_path: Path, repo: ReleaseRepository, releases: tuple[Release, Release]
) -> None:
    champion, candidate = releases
    (device_id,) = device_ids(0.25, True, 1)
    agent = running_champion(tmp_path, repo, device_id)
    repo.stage(FLEET, champion, candidate, mode="shadow", share=0.25, rollout_id=ROLLOUT)
    agent.update()
    assert agent.shadow is not None
    repo.stage(FLEET, champion, candidate, mode="active", share=0.25, rollout_id=ROLLOUT, name="canary", index=1)
    fetcher = fresh_fetcher(agent)
    result = agent.update()
    assert (result.state, result.active, result.shadow) == (UPDATED, f"{MODEL}@2", None)
    assert fetcher.target_downloads == []  # verified again from the download cache
    assert agent.shadow is None and not (agent.device.slots / "shadow").exists()
    agent.infer(frames(1)[0])
    assert agent.telemetry.records[-1][2]["shadow_version"] is None


def test_a_shadow_that_fails_at_run_time_is_counted_and_never_changes_the_command(
    tmp_path: Path, repo: ReleaseRepository, releases: tuple[Release, Release], monkeypatch: pytest.MonkeyPatch
) -> None:
    champion, candidate = releases
    (device_id,) = device_ids(1.0, True, 1)
    agent = running_champion(tmp_path, repo, device_id)
    repo.stage(FLEET, champion, candidate, mode="shadow", share=1.0, rollout_id=ROLLOUT)
    agent.update()

    def broken(features: object) -> None:
        raise RuntimeError("onnxruntime: out of memory")

    monkeypatch.setattr(agent.shadow.runner, "predict", broken)
    decisions = [agent.infer(f) for f in frames(12)]
    assert decisions[-1].reason is None and decisions[-1].commanded[0] == pytest.approx(decisions[-1].proposed[0])
    last = agent.telemetry.records[-1][2]
    assert (last["error"], last["shadow_version"], last["shadow_disagreement"]) == ("shadow", "2", None)
    assert agent.summary()["window"]["errors"] == {"shadow": 3}
    assert_valid_v3([r[2] for r in agent.telemetry.records])


def _failing_self_test(edge: EdgeFiles) -> EdgeFiles:
    build = edge.manifest.builds["int8"]
    wrong = [[v + 0.5 for v in row] for row in build.self_test_outputs]
    manifest = edge.manifest.model_copy(
        update={"builds": {"int8": build.model_copy(update={"self_test_outputs": wrong})}}
    )
    return EdgeFiles(edge.onnx, manifest)


@pytest.mark.parametrize("fault", ["self-test", "attestation"])
def test_a_shadow_that_fails_its_self_test_or_verification_is_refused_and_the_device_runs_on(
    tmp_path: Path, repo: ReleaseRepository, releases: tuple[Release, Release], candidate_edge: EdgeFiles, fault: str
) -> None:
    champion, _ = releases
    if fault == "self-test":
        candidate = repo.release(FLEET, 3, _failing_self_test(candidate_edge), publish=False)
    else:
        from actuation.signing import GUARDRAIL, KeyStore

        stranger = KeyStore(tmp_path / "stranger")
        stranger.generate(GUARDRAIL)
        candidate = repo.release(FLEET, 3, candidate_edge, signer=stranger.signer(GUARDRAIL), publish=False)
    (device_id,) = device_ids(1.0, True, 1)
    agent = running_champion(tmp_path, repo, device_id)
    repo.stage(FLEET, champion, candidate, mode="shadow", share=1.0, rollout_id=ROLLOUT)
    result = agent.update()
    assert result.state == UP_TO_DATE and result.shadow.startswith(f"refused: {fault}: ")
    assert agent.shadow is None and not (agent.device.slots / "shadow").exists()
    decisions = [agent.infer(f) for f in frames(12)]
    assert decisions[-1].reason is None
    assert agent.telemetry.records[-1][2]["shadow_version"] is None
    assert agent.summary()["window"]["errors"] == {f"shadow-refused:{fault}": 1}
    assert agent.summary()["stage"]["shadow_state"].startswith(f"refused: {fault}")


@pytest.mark.parametrize("mode", ["active", "shadow"])
@pytest.mark.parametrize("wrong", ["fleet", "tenant"])
def test_a_candidate_attested_for_another_fleet_or_tenant_is_refused_in_either_mode(
    tmp_path: Path,
    repo: ReleaseRepository,
    releases: tuple[Release, Release],
    candidate_edge: EdgeFiles,
    mode: str,
    wrong: str,
) -> None:
    champion, _ = releases
    if wrong == "fleet":
        candidate = repo.release(FLEET, 3, candidate_edge, verdict=verdict_for(MODEL, 3, ["acme-vans"]), publish=False)
        reason = "verdict"
    else:
        tenant_model = f"{MODEL}.acme-mobility"
        edge = EdgeFiles(candidate_edge.onnx, candidate_edge.manifest.model_copy(update={"model": tenant_model}))
        verdict = verdict_for(tenant_model, 3, [FLEET], tenant="acme-mobility")
        candidate = repo.release(FLEET, 3, edge, tenant="acme-mobility", verdict=verdict, publish=False)
        reason = "tenant"
    (device_id,) = device_ids(1.0, True, 1)
    agent = running_champion(tmp_path, repo, device_id)
    repo.stage(FLEET, champion, candidate, mode=mode, share=1.0, rollout_id=ROLLOUT)
    result = agent.update()
    assert agent.active == f"{MODEL}@1" and agent.shadow is None
    if mode == "active":
        assert (result.state, result.reason) == (REFUSED, reason)
    else:
        assert result.state == UP_TO_DATE and result.shadow.startswith(f"refused: {reason}: ")
    # remembered for the release, whichever mode it comes back in: not downloaded again
    other = "shadow" if mode == "active" else "active"
    repo.stage(FLEET, champion, candidate, mode=other, share=1.0, rollout_id=ROLLOUT, index=1)
    fetcher = fresh_fetcher(agent)
    result = agent.update()
    assert agent.active == f"{MODEL}@1" and agent.shadow is None
    assert f"refused: {reason}" in (result.shadow or result.line)
    assert not any("@3." in r for r in fetcher.target_downloads)


@pytest.mark.parametrize("fault", ["pointer", "target", "attestation"])
def test_a_canary_whose_candidate_fails_verification_keeps_the_champion(
    tmp_path: Path, repo: ReleaseRepository, releases: tuple[Release, Release], candidate_edge: EdgeFiles, fault: str
) -> None:
    from actuation.contract import model_target_path
    from actuation.signing import GUARDRAIL, KeyStore
    from tests.tuf_repository import MODEL_FILE

    champion, _ = releases
    signer = None
    if fault == "attestation":
        stranger = KeyStore(tmp_path / "stranger")
        stranger.generate(GUARDRAIL)
        signer = stranger.signer(GUARDRAIL)
    candidate = repo.release(FLEET, 3, candidate_edge, signer=signer, publish=False)
    if fault == "pointer":  # the stage names digests that are not those of the files the fleet role signs
        candidate = candidate.model_copy(
            update={"model_file": candidate.model_file.model_copy(update={"sha256": "ab" * 32})}
        )
    (device_id,) = device_ids(1.0, True, 1)
    agent = running_champion(tmp_path, repo, device_id)
    repo.stage(FLEET, champion, candidate, mode="active", share=1.0, rollout_id=ROLLOUT)
    if fault == "target":
        url = repo.target_url(model_target_path(FLEET, MODEL, 3, MODEL_FILE))
        repo.files[url] = repo.files[url][:-1] + bytes([repo.files[url][-1] ^ 0xFF])
    result = agent.update()
    assert (result.state, result.reason, agent.active) == (REFUSED, fault, f"{MODEL}@1")
    assert agent.slots.state().active == "a" and agent.infer(frames(1)[0]) is not None


def test_a_device_without_a_model_whose_candidate_is_refused_takes_the_champion(
    tmp_path: Path, repo: ReleaseRepository, releases: tuple[Release, Release], candidate_edge: EdgeFiles
) -> None:
    champion, _ = releases
    candidate = repo.release(FLEET, 3, _failing_self_test(candidate_edge), publish=False)
    repo.stage(FLEET, champion, candidate, mode="active", share=1.0, rollout_id=ROLLOUT)
    agent = make_agent(tmp_path, repo, "car-new")
    result = agent.update()
    assert (result.state, result.reason, result.active) == (REFUSED, "self-test", f"{MODEL}@1")


def test_telemetry_v3_says_the_fleet_and_what_failed_in_the_inference(
    tmp_path: Path, repo: ReleaseRepository, releases: tuple[Release, Release]
) -> None:
    agent = running_champion(tmp_path, repo, "car-1")
    run = frames(11)
    del run[10]["brake"]
    for frame in run:
        agent.infer(frame)
    records = [r[2] for r in agent.telemetry.records]
    assert_valid_v3(records)
    assert [r["error"] for r in records[-2:]] == [None, "bad-frame"]
    assert {r["fleet"] for r in records} == {FLEET} and {r["shadow_version"] for r in records} == {None}


# -- hard cases --------------------------------------------------------------------------------
def test_the_hard_cases_are_the_largest_disagreements_and_the_interventions_bounded_on_disk(
    tmp_path: Path, repo: ReleaseRepository, releases: tuple[Release, Release]
) -> None:
    champion, candidate = releases
    (device_id,) = device_ids(1.0, True, 1)
    agent = running_champion(tmp_path, repo, device_id, hard_cases=3)
    repo.stage(FLEET, champion, candidate, mode="shadow", share=1.0, rollout_id=ROLLOUT)
    agent.update()
    run = frames(60)
    run[30] = {**run[30], "accel_mps2": -1.5}  # 2.7 m/s² below the frame before: the monitor refuses the step
    for frame in run:
        agent.infer(frame)
    agent.write_status()
    lines = agent.device.hardcases.read_text().splitlines()
    cases = [json.loads(line) for line in lines]
    kinds = [c["kind"] for c in cases]
    assert kinds.count(DISAGREEMENT) == 3 and kinds.count("intervention") >= 1 and len(cases) <= 9
    largest = sorted((r[2]["shadow_disagreement"] or 0.0 for r in agent.telemetry.records), reverse=True)[:3]
    assert [c["shadow_disagreement"] for c in cases[:3]] == pytest.approx(largest)
    first = cases[0]
    assert len(first["features"]) == 53 and len(first["outputs"]) == len(first["shadow_outputs"]) == 2
    assert (first["model_version"], first["shadow_version"]) == ("1", "2") and len(first["frames"]) == 10
    step = next(c for c in cases if c["kind"] == "intervention")
    assert step["reason"] == "step" and step["frames"][-1]["accel_mps2"] == -1.5
    assert agent.summary()["hard_cases"] == len(cases)
    restarted = Agent(agent.device, fetcher=MemoryFetcher(repo), hard_cases=3)
    assert restarted.hard_cases.cases() == agent.hard_cases.cases()  # a restart loses none


def test_the_hard_case_store_keeps_k_of_each_kind_and_its_file_under_its_byte_bound(tmp_path: Path) -> None:
    store = HardCases(k=5, max_bytes=4096)

    def case(kind: str, d: float) -> HardCase:
        return HardCase(kind, 0, "1", [d] * 53, [d, 0.1], None, 0.1, "2", [d, 0.1], d, 0.1, None)

    built = 0

    def counted(kind: str, d: float):
        def make() -> HardCase:
            nonlocal built
            built += 1
            return case(kind, d)

        return make

    for i in range(1000):
        d = (i * 37 % 1000) / 10
        store.offer(DISAGREEMENT, counted(DISAGREEMENT, d), d)
        store.offer("intervention", counted("intervention", d))
    assert len(store) == 10
    assert [c.shadow_disagreement for c in store.cases()[:5]] == [99.9, 99.8, 99.7, 99.6, 99.5]
    assert built < 1000 + 200  # a disagreement case is built only when it enters the top k
    written = store.write(tmp_path / "hardcases.jsonl")
    assert 0 < written < 10 and (tmp_path / "hardcases.jsonl").stat().st_size <= 4096


def test_status_shows_the_stage_and_the_shadows_figures(
    tmp_path: Path, repo: ReleaseRepository, releases: tuple[Release, Release]
) -> None:
    from click.testing import CliRunner

    from fieldloop.cli import main

    champion, candidate = releases
    (device_id,) = device_ids(0.25, True, 1)
    agent = running_champion(tmp_path, repo, device_id, disagreement_threshold=0.5)
    repo.stage(FLEET, champion, candidate, mode="shadow", share=0.25, rollout_id=ROLLOUT, name="shadow")
    agent.update()
    for frame in frames(30):
        agent.infer(frame)
    written = agent.write_status()
    assert json.loads(agent.device.status.read_text())["stage"] == written["stage"]
    env = {"FIELDLOOP_HOME": str(tmp_path / "home")}
    out = CliRunner().invoke(main, ["agent", "status", "--device", device_id, "--dir", str(agent.device.path)], env=env)
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert f"rollout {ROLLOUT}: stage shadow (shadow, 25% of the fleet), candidate {MODEL}@2, in its cohort" in text
    assert f"shadow {MODEL}@2 on 21 inferences: disagreement rate" in text and "p95" in text


def test_a_shadow_device_counts_disagreements_by_the_threshold_the_rollout_signed(
    tmp_path: Path, repo: ReleaseRepository, releases: tuple[Release, Release]
) -> None:
    champion, candidate = releases
    (device_id,) = device_ids(0.25, True, 1)
    agent = running_champion(tmp_path, repo, device_id)  # no threshold of its own
    repo.stage(FLEET, champion, candidate, mode="shadow", share=0.25, rollout_id=ROLLOUT, disagreement_threshold=0.3)
    agent.update()
    for frame in frames(30):
        agent.infer(frame)
    window = agent.summary()["window"]["shadow"]
    assert window["disagreement_threshold"] == 0.3 and window["disagreement_rate"] is not None
