"""A fleet of real edge agents against a real release repository (served by the stack's nginx)
and the real broker: they converge on what is published, keep their model through a network
fault or a repository outage and catch up after it, and their telemetry lands in the topic.

Every release is a real model of the vehicle task's width (tests/tuf_repository.py
``tiny_model``) signed into the repository by ``actuation.release.publish``, so each agent
verifies, installs, self-tests and runs it as a car would.
"""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from actuation.contract import ATTESTATION_FILE, load_fleets
from actuation.fleet import Fault, FleetRun, FleetSettings
from actuation.release.publish import MODEL_FILE, Approved, publish
from fieldloop.config import FieldloopConfig
from fieldloop.contracts import load_contracts
from fieldloop.registry import MANIFEST_FILE
from fieldloop.wire import decode, default_registry
from tests.kafka_topics import read_all
from tests.release_fixtures import ServedRelease, attest_files, served_release, verdict
from tests.tuf_repository import tiny_model

FLEET = "public-cars"
MODEL = "fieldloop.vehicle-longitudinal"
DEVICES = 20


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, cfg: FieldloopConfig) -> Iterator[ServedRelease]:
    with served_release(tmp_path_factory.mktemp("fleet-release") / "home", cfg) as release:
        yield release


_versions = itertools.count(1)


def publish_next(served: ServedRelease) -> str:
    """A new version of the vehicle model, approved for the fleet and signed into its role."""
    version = next(_versions)
    fleet = load_fleets().get(FLEET)
    files = tiny_model(accel_gain=1.0 / version)
    edge = {MODEL_FILE: files.onnx, MANIFEST_FILE: files.manifest_bytes}
    judged = verdict(MODEL, version, fleet.task, fleet.tenant, [FLEET])
    edge[ATTESTATION_FILE] = attest_files(served.repo.keys, judged, edge)
    publish(served.repo, Approved(MODEL, version, fleet, judged, "run", edge))
    return f"{MODEL}@{version}"


def fleet(served: ServedRelease, tmp_path: Path, bootstrap: str | None = None, **settings: Any) -> FleetRun:
    values = {
        "fleet": FLEET,
        "devices": DEVICES,
        "poll_s": 0.5,
        "rate_hz": 2.0,
        "telemetry": bootstrap is not None,
        "id_prefix": f"it-{uuid.uuid4().hex[:8]}",
        **settings,
    }
    return FleetRun(
        FleetSettings(**values),
        root=served.repo.root_bytes(),
        repo_url=served.url,
        directory=tmp_path / "fleet",
        bootstrap=bootstrap,
    )


def all_on(version: str, devices: int = DEVICES):
    return lambda run: run.running() == {version: devices}


def telemetry_topic(bootstrap: str) -> str:
    topic = load_contracts()["fleet-telemetry"].topic
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 1, 1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()
    return topic


def test_twenty_agents_converge_on_each_release_and_their_telemetry_lands_in_the_topic(
    served: ServedRelease, kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = telemetry_topic(kafka_bootstrap)
    first = publish_next(served)
    run = fleet(served, tmp_path, kafka_bootstrap)
    run.start()
    try:
        assert run.wait_for(all_on(first), 30), run.running()
        second = publish_next(served)
        assert run.wait_for(all_on(second), 30), run.running()
        run.wait_for(lambda r: r.elapsed() > 4, 10)  # some inference on the second
    finally:
        run.stop()
    log = run.activations
    assert Counter((a.previous, a.active) for a in log) == {(None, first): DEVICES, (first, second): DEVICES}
    summary = run.summary()
    assert summary["telemetry"]["delivered"] is True
    assert summary["poll_bytes"]["up-to-date"]["metadata_bytes_per_poll"] < 2048  # timestamp and root probe
    assert summary["poll_bytes"]["up-to-date"]["target_bytes_per_poll"] == 0

    ours = [r for r in read_all(kafka_bootstrap, topic) if r.key.decode().startswith(run.device_ids[0][:-5])]
    records = [decode(r.value, default_registry()) for r in ours]
    assert {r["device_id"] for r in records} == set(run.device_ids)
    assert len(records) == summary["telemetry"]["accepted"] == summary["inferences"]
    assert {f"{r['model_name']}@{r['model_version']}" for r in records} <= {first, second, "fallback@none"}
    assert f"{MODEL}@{second.rsplit('@')[1]}" in {f"{r['model_name']}@{r['model_version']}" for r in records}
    for device in run.device_ids:  # in order per device, none lost
        seqs = [int(dict(r.headers)["fieldloop.seq"]) for r in ours if r.key == device.encode()]
        assert seqs == list(range(1, len(seqs) + 1))


def test_offline_devices_keep_their_model_spool_their_telemetry_and_catch_up_after(
    served: ServedRelease, kafka_bootstrap: str, tmp_path: Path
) -> None:
    topic = telemetry_topic(kafka_bootstrap)
    current = publish_next(served)
    start, duration = 2.0, 5.0
    run = fleet(served, tmp_path, kafka_bootstrap, faults=(Fault.parse(f"offline:0.25@{start}+{duration}"),))
    offline = {run.device_ids[i] for i in run.plan.devices("offline")}
    assert len(offline) == 5
    run.start()
    try:
        assert run.wait_for(all_on(current), 30), run.running()
        assert run.wait_for(lambda r: r.elapsed() > start + 0.5, 10)
        assert run.elapsed() < start + duration - 2, "the machine is too slow for this test's timing"
        new = publish_next(served)
        assert run.wait_for(lambda r: r.running()[new] == DEVICES - len(offline), 20), run.running()
        in_fault = run.elapsed() < start + duration
        spooled = {d.device_id: d.telemetry.stats.pending for d in run.devices if d.device_id in offline}
        assert run.wait_for(all_on(new), 20), run.running()
    finally:
        run.stop()
    assert in_fault, "the others converged only after the fault ended: the test proved nothing"
    moved = {a.device: a.at_s for a in run.activations if a.active == new}
    assert len(moved) == DEVICES
    assert all(moved[d] >= start + duration for d in offline), moved  # not one updated while offline
    assert all(moved[d] < start + duration for d in set(moved) - offline)
    assert all(n > 0 for n in spooled.values()), spooled  # held in the spool while offline
    summary = run.summary()
    assert summary["update_states"]["offline"] >= len(offline)
    assert summary["telemetry"]["pending"] == 0 and summary["telemetry"]["delivered"] is True
    landed = Counter(r.key.decode() for r in read_all(kafka_bootstrap, topic) if r.key.decode() in offline)
    accepted = {d.device_id: d.telemetry.stats.accepted for d in run.devices if d.device_id in offline}
    assert dict(landed) == accepted  # drained after the fault, none lost


def test_during_a_repository_outage_no_device_changes_model(served: ServedRelease, tmp_path: Path) -> None:
    current = publish_next(served)
    start, duration = 2.0, 4.0
    run = fleet(served, tmp_path, faults=(Fault.parse(f"outage@{start}+{duration}"),), rate_hz=1.0)
    run.start()
    try:
        assert run.wait_for(all_on(current), 30), run.running()
        assert run.wait_for(lambda r: r.elapsed() > start + 0.5, 10)
        new = publish_next(served)
        published_at = run.elapsed()
        assert published_at < start + duration - 1, "the machine is too slow for this test's timing"
        assert run.wait_for(all_on(new), 30), run.running()
    finally:
        run.stop()
    changes = [a for a in run.activations if a.active == new]
    assert len(changes) == DEVICES
    assert min(a.at_s for a in changes) >= start + duration  # nobody moved while the repository was out
    summary = run.summary()
    assert summary["update_states"]["offline"] >= DEVICES  # every device polled into the outage
    assert summary["inferences_by_version"][current] > 0
