"""How fast the rollout controller acts on a bad canary: from the breaching telemetry's arrival
in Kafka to the rollback signed into the fleet's pointer, against a bare consumer's read of
the same records in the same run, at several fleet sizes.

For each fleet size N: a temporary home with its own release repository and audit table, a
new topic of 3 partitions on the running broker (`fieldloop stack up --only kafka`), a
champion (v1) and a rollout of v2 in its canary (20 % of the fleet) with one gate: the
fallback rate may rise at most 0.05 over the champion's cohort, else roll back. Every device
first reports ``--seconds`` of healthy telemetry at ``--rate`` records per second (sent
before the controller starts, so it reads a stage's backlog as a restarted one does); once the
controller has read it and holds, each canary device sends 10 records in which its model fell
back. Two clocks start when the producer's last acknowledgement returns:

* decision: the controller (looking every ``--every`` seconds) writes its rollback decision
  to the Delta audit table and publishes the rollback (fleet role, snapshot, timestamp);
* baseline: a plain KafkaConsumer, already positioned at the end of the topic, has read
  every one of those records.

    .venv/bin/python bench/rollout_decision.py --devices 100,1000,10000 --seconds 10
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="100,1000,10000", help="fleet sizes, comma-separated")
    parser.add_argument("--seconds", type=int, default=10, help="seconds of healthy telemetry before the breach")
    parser.add_argument("--rate", type=float, default=1.0, help="records per device per second")
    parser.add_argument("--every", type=float, default=0.2, help="seconds between the controller's looks")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per size; medians are reported")
    args = parser.parse_args()
    from fieldloop.config import load_config

    cfg = load_config()
    rows = []
    for n in [int(x) for x in args.devices.split(",")]:
        rounds = [_round(cfg, n, args.seconds, args.rate, args.every) for _ in range(args.repeat)]
        decision = sorted(r["decision_s"] for r in rounds)[len(rounds) // 2]
        baseline = sorted(r["baseline_s"] for r in rounds)[len(rounds) // 2]
        rows.append((n, rounds[0]["records"], decision, baseline))
        print(
            f"  {n:>6} devices: decision {decision * 1e3:7.0f} ms, bare consumer {baseline * 1e3:6.0f} ms "
            f"(rounds: {', '.join(str(round(r['decision_s'] * 1e3)) for r in rounds)} ms)",
            flush=True,
        )
    print()
    print("| devices | backlog records | decision (median) | bare consumer | ratio |")
    print("|---|---|---|---|---|")
    for n, records, decision, baseline in rows:
        print(
            f"| {n:,} | {records:,} | {decision * 1e3:.0f} ms | {baseline * 1e3:.0f} ms | {decision / baseline:.1f} |"
        )
    sizes = {n: d for n, _, d, _ in rows}
    if 1000 in sizes and 10000 in sizes:
        print(f"\ndecision latency 10,000 / 1,000 devices: {sizes[10000] / sizes[1000]:.2f}")


def _round(cfg: Any, n: int, seconds: int, rate: float, every: float) -> dict[str, Any]:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

    from actuation.rollout import controller as ctl
    from actuation.rollout.feed import TelemetryFeed

    topic = f"fieldloop.bench.rollout-{uuid.uuid4().hex[:8]}.telemetry.v1"
    admin = KafkaAdminClient(**cfg.kafka.client_options())
    admin.create_topics([NewTopic(topic, 3, 1)])
    admin.close()
    with tempfile.TemporaryDirectory(prefix="fieldloop-bench-rollout-") as tmp:
        site = _site(Path(tmp))
        devices = [f"bench-{i:06d}" for i in range(n)]
        stage = site.repo.pointer(site.fleet.name).stage
        canary = [d for d in devices if stage.includes(d)]
        producer = KafkaProducer(**cfg.kafka.client_options(), linger_ms=20, batch_size=256 * 1024, acks="all")
        encode = _encoder()
        backlog = 0
        for second in range(seconds):
            for k in range(int(rate)):
                for d in devices:
                    version = 2 if stage.includes(d) else 1
                    producer.send(topic, encode(d, version, False, second + k / rate), key=d.encode())
                    backlog += 1
        producer.flush()
        decided = threading.Event()
        controller = ctl.Controller(
            site,
            feed=lambda since: TelemetryFeed(cfg.kafka, since, topic),
            on_decision=lambda d: decided.set() if d.action == "rollback" else None,
            every_s=every,
        )
        worker = threading.Thread(target=controller.run, daemon=True)
        worker.start()
        while not site.log.rows(site.fleet.name)[-1].reason.startswith("soaking"):  # read the backlog, judged it
            time.sleep(0.05)
        bare = KafkaConsumer(**cfg.kafka.client_options(), group_id=None, enable_auto_commit=False)
        parts = [TopicPartition(topic, p) for p in range(3)]
        bare.assign(parts)
        bare.seek_to_end()
        for p in parts:
            bare.position(p)
        burst = [(d, encode(d, 2, True, seconds + i * 0.01)) for d in canary for i in range(10)]
        for d, payload in burst:
            producer.send(topic, payload, key=d.encode())
        producer.flush()
        t0 = time.perf_counter()
        seen = 0
        while seen < len(burst):
            seen += sum(len(v) for v in bare.poll(timeout_ms=100).values())
        baseline = time.perf_counter() - t0
        decided.wait(60)
        decision = time.perf_counter() - t0
        worker.join(10)
        bare.close()
        producer.close()
        assert site.log.current(site.fleet.name).state == "rolled-back", "the controller did not roll back"
    admin = KafkaAdminClient(**cfg.kafka.client_options())
    admin.delete_topics([topic])
    admin.close()
    return {"records": backlog, "decision_s": decision, "baseline_s": baseline}


def _encoder() -> Any:
    from fieldloop.wire import default_registry, encode

    schema = default_registry().get("telemetry")
    start_ms = int(time.time() * 1000)

    def record(device: str, version: int, fell_back: bool, offset_s: float) -> bytes:
        return encode(
            {
                "device_id": device,
                "model_name": "fieldloop.vehicle-longitudinal",
                "model_version": str(version),
                "ts": start_ms + int(offset_s * 1000),
                "latency_ms": 1.5,
                "ood_score": 0.2,
                "disagreement": 0.1,
                "intervention": fell_back,
                "update_state": "up-to-date",
                "fleet": "public-cars",
                "shadow_version": None,
                "shadow_disagreement": None,
                "shadow_ood_score": None,
                "error": None,
            },
            schema,
        )

    return record


def _site(tmp: Path) -> Any:
    """A release repository with a champion (v1) and a rollout of v2 in its canary (stand-in files)."""
    from actuation.contract import ATTESTATION_FILE, MANIFEST_FILE, PolicyRef, Verdict, load_fleets
    from actuation.release.publish import MODEL_FILE, Approved, publish
    from actuation.release.repository import Repository
    from actuation.rollout import controller as ctl
    from actuation.rollout.audit import RolloutLog
    from actuation.rollout.policy import RolloutPolicy
    from actuation.signing import KeyStore
    from fieldloop.residency import ResidencyGuard

    fleet = load_fleets().get("public-cars")
    repo = Repository(tmp / "release", KeyStore(tmp / "home"), load_fleets())
    repo.init()

    def approved(version: int) -> Approved:
        verdict = Verdict(
            verdict="pass",
            model="fieldloop.vehicle-longitudinal",
            version=version,
            task=fleet.task,
            tenant=None,
            fleets=[fleet.name],
            policy=PolicyRef(name=fleet.task, version=1, sha256="0" * 64),
            checks=[],
            mlflow_uri="models:/bench",
            run_id="bench",
            lineage={},
            judged_at=datetime.now(UTC),
        )
        files = {name: os.urandom(20_000) for name in (MODEL_FILE, MANIFEST_FILE, ATTESTATION_FILE)}
        return Approved(verdict.model, version, fleet, verdict, "bench", files)

    publish(repo, approved(1))
    policy = RolloutPolicy.model_validate(
        {
            "fleet": fleet.name,
            "version": 1,
            "disagreement_threshold": 0.5,
            "stage": [
                {"name": "canary", "mode": "active", "share": 0.2, "min_devices": 1, "soak_s": 3600},
                {"name": "all", "mode": "active", "share": 1.0, "min_devices": 1, "soak_s": 0},
            ],
            "gate": [{"name": "fallbacks", "metric": "intervention_rate", "max_increase": 0.05, "action": "rollback"}],
        }
    )
    guard = ResidencyGuard(["ap-northeast-1"], "ap-northeast-1")
    log = RolloutLog(str(tmp / "lake" / "fleet" / "rollouts"), guard)
    cfg = type("BenchCfg", (), {"release": type("R", (), {"s3": None})()})()
    site = ctl.Site(cfg, fleet, repo, log, policy)
    ctl.begin(site, approved(2), "bench")
    return site


if __name__ == "__main__":
    main()
