"""Fleet polling: how fast N real edge agents in one process converge on a new release, what an
update check costs on the wire, and how many update checks per second one process sustains.

A release repository (``actuation.release``) is built in a temporary home and served by the
stack's nginx on a free loopback port. For each fleet size, :class:`actuation.fleet.FleetRun`
provisions N devices (own directory, TUF metadata cache, A/B slots) and runs N real
``actuation.agent.Agent`` s from ``--threads`` worker threads, sharing one urllib3 pool:

1. version 1 is published before the agents start; every agent installs it (the first install);
2. idle: ``--idle-s`` seconds with nothing new (the idle update check's bytes and rate);
3. version 2 is published; convergence is the time from the publish to the last of the N
   agents running it (every agent's activation is logged).

Bytes are counted at each device's fetcher (metadata apart from targets). No telemetry (a
Kafka client per device does not fit thousands of devices in one process) and no inference
by default (``--rate-hz``): this measures the update path. Device directories go on tmpfs
(``/dev/shm``) when there is one: on one shared disk, the fsyncs of thousands of devices'
installs measure the machine's disk, not the fleet.

    .venv/bin/python bench/fleet_rollout.py --sizes 100,1000,10000 --poll-s 30 --threads 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import resource
import shlex
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MODEL = "fieldloop.vehicle-longitudinal"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,10000", help="fleet sizes, comma-separated (agents)")
    parser.add_argument("--poll-s", type=float, default=30.0, help="each agent's update period (seconds)")
    parser.add_argument("--threads", type=int, default=2, help="worker threads ticking the agents")
    parser.add_argument("--rate-hz", type=float, default=0.0, help="inferences per agent per second (0: none)")
    parser.add_argument("--idle-s", type=float, default=None, help="idle phase (seconds; default one poll period)")
    parser.add_argument("--timeout-s", type=float, default=1800.0, help="give up a convergence after this (seconds)")
    parser.add_argument("--dir", type=Path, default=None, help="where devices go (default: a temp dir on /dev/shm)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="split each fleet over this many processes (the agents' CPU is python-tuf's, under one GIL per process)",
    )
    parser.add_argument("--child", nargs=5, default=None, help=argparse.SUPPRESS)  # url root dir prefix agents
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.child:
        child(args)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    base = args.dir or (Path("/dev/shm") if Path("/dev/shm").is_dir() else None)
    with tempfile.TemporaryDirectory(prefix="fieldloop-bench-fleet-", dir=base) as tmp:
        results = run(Path(tmp), sizes, args)
    report(results, args)


def run(tmp: Path, sizes: list[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    from actuation.contract import load_fleets
    from actuation.release.repository import Repository
    from actuation.signing import KeyStore
    from fieldloop.config import load_config
    from fieldloop.stack import Stack

    (tmp / "home").mkdir()
    cfg = load_config({"FIELDLOOP_HOME": str(tmp / "home"), "FIELDLOOP_RELEASE_PORT": str(_free_port())})
    repo = Repository(cfg.release_dir, KeyStore(cfg.home), load_fleets())
    repo.init()
    fleet = load_fleets().get("public-cars")
    stack = Stack(cfg, only=["release"])
    for comp in stack.components:  # not stack.up(): that resolves the JVM jars too
        comp.start()
    results = []
    try:
        _await(cfg.release.base_url)
        version = 0
        for n in sizes:
            version += 1
            _publish(repo, fleet, version)  # what the agents find at their first poll
            if args.processes > 1:
                result = _processes(tmp, repo, cfg.release.base_url, n, version, args)
            else:
                result = _one_size(tmp, repo, cfg.release.base_url, n, version, args)
            version += 1
            results.append(result)
            print(json.dumps(result), file=sys.stderr)
    finally:
        stack.down()
    return results


def _one_size(tmp: Path, repo: Any, url: str, n: int, first: int, args: argparse.Namespace) -> dict[str, Any]:
    from actuation.fleet import FleetRun, FleetSettings

    settings = FleetSettings(
        fleet="public-cars",
        devices=n,
        poll_s=args.poll_s,
        rate_hz=args.rate_hz,
        threads=args.threads,
        telemetry=False,
        write_status=False,
        progress_s=10.0,
    )
    t0 = time.perf_counter()
    fleet = FleetRun(settings, root=repo.root_bytes(), repo_url=url, directory=tmp / f"fleet-{n}")
    rss0 = _rss_mib()
    fleet.start(progress=lambda s: print(f"  {n}: {s}", file=sys.stderr))
    setup_s = time.perf_counter() - t0
    try:
        v1, v2 = f"{MODEL}@{first}", f"{MODEL}@{first + 1}"
        if not fleet.wait_for(lambda r: r.running()[v1] == n, args.timeout_s, every_s=0.5):
            raise SystemExit(f"{n} agents: only {fleet.running()} after {args.timeout_s} s (first install)")
        installed_s = fleet.elapsed()
        rss_installed = _rss_mib()

        before, cpu = fleet.summary(), time.process_time()
        time.sleep(args.idle_s if args.idle_s is not None else args.poll_s)
        idle = _between(before, fleet.summary(), time.process_time() - cpu)

        _publish(repo, _fleet(), first + 1)
        published = fleet.elapsed()
        before, cpu = fleet.summary(), time.process_time()
        if not fleet.wait_for(lambda r: r.running()[v2] == n, args.timeout_s, every_s=0.2):
            raise SystemExit(f"{n} agents: only {fleet.running()} after {args.timeout_s} s (convergence)")
        converged = fleet.elapsed()
        rollout = _between(before, fleet.summary(), time.process_time() - cpu)
    finally:
        fleet.stop()
    last = max(a.at_s for a in fleet.activations if a.active == v2)
    return {
        "agents": n,
        "threads": args.threads,
        "poll_s": args.poll_s,
        "rate_hz": args.rate_hz,
        "setup_s": round(setup_s, 2),  # provisioning and building the agents
        "first_install_s": round(installed_s, 2),
        "convergence_s": round(last - published, 2),
        "converged_seen_s": round(converged - published, 2),
        "idle": idle,
        "rollout": rollout,
        "rss_mib_agents_built": round(rss0, 1),
        "rss_mib_installed": round(rss_installed, 1),
        "max_poll_lag_s": fleet.summary()["max_poll_lag_s"],
    }


def _processes(tmp: Path, repo: Any, url: str, n: int, first: int, args: argparse.Namespace) -> dict[str, Any]:
    """The same fleet split over ``--processes`` processes (``--child``): first install and convergence only."""
    import subprocess

    root = tmp / "root.json"
    root.write_bytes(repo.root_bytes())
    share = n // args.processes
    common = ["--poll-s", str(args.poll_s), "--threads", str(args.threads), "--rate-hz", str(args.rate_hz)]
    common += ["--sizes", f"{first},{first + 1}", "--timeout-s", str(args.timeout_s)]
    children = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                *common,
                "--child",
                url,
                str(root),
                str(tmp / f"fleet-{n}"),
                f"p{k}",
                str(share),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for k in range(args.processes)
    ]
    try:
        t0 = time.time()
        installed = [json.loads(c.stdout.readline()) for c in children]  # type: ignore[union-attr]
        if any(i.get("event") != "installed" for i in installed):
            raise SystemExit(f"a child failed: {installed}")
        first_install = max(i["at"] for i in installed) - t0
        time.sleep(args.idle_s if args.idle_s is not None else args.poll_s)
        _publish(repo, _fleet(), first + 1)
        published = time.time()
        converged = [json.loads(c.stdout.readline()) for c in children]  # type: ignore[union-attr]
        if any(c.get("event") != "converged" for c in converged):
            raise SystemExit(f"a child failed: {converged}")
    finally:
        for c in children:
            c.wait(60)
    seconds = max(c["last"] for c in converged) - published
    return {
        "agents": share * args.processes,
        "processes": args.processes,
        "threads": args.threads,
        "poll_s": args.poll_s,
        "first_install_s": round(first_install, 2),
        "convergence_s": round(seconds, 2),
        "polls_per_s": round(sum(c["polls_per_s"] for c in converged), 1),  # idle and rollout phases
        "idle_metadata_bytes": [c["idle_bytes"] for c in converged],
    }


def child(args: argparse.Namespace) -> None:
    """One process of ``--processes``: its share of the fleet; a JSON line when it runs the first
    version, one when it runs the next (with the wall time of its last activation)."""
    from actuation.fleet import FleetRun, FleetSettings

    url, root, directory, prefix, agents = args.child
    first, following = (f"{MODEL}@{v}" for v in args.sizes.split(","))
    n = int(agents)
    settings = FleetSettings(
        fleet="public-cars",
        devices=n,
        id_prefix=prefix,
        poll_s=args.poll_s,
        rate_hz=args.rate_hz,
        threads=args.threads,
        telemetry=False,
        write_status=False,
    )
    fleet = FleetRun(settings, root=Path(root).read_bytes(), repo_url=url, directory=Path(directory) / prefix)
    fleet.start()
    wall0 = time.time() - fleet.elapsed()
    try:
        if not fleet.wait_for(lambda r: r.running()[first] == n, args.timeout_s, every_s=0.2):
            print(json.dumps({"event": "failed", "running": fleet.running()}), flush=True)
            return
        print(json.dumps({"event": "installed", "at": time.time()}), flush=True)
        polls, since = fleet.summary()["polls"], fleet.elapsed()
        if not fleet.wait_for(lambda r: r.running()[following] == n, args.timeout_s, every_s=0.2):
            print(json.dumps({"event": "failed", "running": fleet.running()}), flush=True)
            return
    finally:
        fleet.stop()
    summary = fleet.summary()
    last = max(a.at_s for a in fleet.activations if a.active == following)
    idle = summary["poll_bytes"].get("up-to-date", {}).get("metadata_bytes_per_poll")
    rate = (summary["polls"] - polls) / (summary["seconds"] - since)  # idle and rollout together
    event = {"event": "converged", "last": wall0 + last, "polls_per_s": rate, "idle_bytes": idle}
    print(json.dumps(event), flush=True)


def _between(a: dict[str, Any], b: dict[str, Any], cpu_s: float) -> dict[str, Any]:
    """Polls per second, this process's CPU per poll and bytes per poll by state, between two summaries."""
    seconds = b["seconds"] - a["seconds"]
    polls = b["polls"] - a["polls"]
    out: dict[str, Any] = {
        "seconds": round(seconds, 2),
        "polls": polls,
        "polls_per_s": round(polls / seconds, 1),
        "cpu_ms_per_poll": round(cpu_s * 1e3 / polls, 2) if polls else None,
        "cpu_share": round(cpu_s / seconds, 2),  # of one core; 2.0 would be both of this machine's
    }
    for state, fig in b["poll_bytes"].items():
        prev = a["poll_bytes"].get(state, {"polls": 0, "metadata_bytes_per_poll": 0, "target_bytes_per_poll": 0})
        k = fig["polls"] - prev["polls"]
        if k:
            meta = fig["metadata_bytes_per_poll"] * fig["polls"] - prev["metadata_bytes_per_poll"] * prev["polls"]
            targets = fig["target_bytes_per_poll"] * fig["polls"] - prev["target_bytes_per_poll"] * prev["polls"]
            out[state] = {"polls": k, "metadata_bytes": round(meta / k), "target_bytes": round(targets / k)}
    return out


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"fleet polling: public-cars, {args.threads} threads, poll every {args.poll_s:g} s, inference "
        f"{args.rate_hz:g} Hz, no telemetry; {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print("agents  setup s  1st install s  idle polls/s  idle B/poll  idle CPU ms/poll  changed B/poll (meta+targets)  "
          "convergence s  polls/s in rollout  CPU ms/poll in rollout  RSS MiB")  # fmt: skip
    for r in results:
        if "processes" in r:
            print(
                f"{r['agents']:>6}  in {r['processes']} processes: first install {r['first_install_s']} s, "
                f"convergence {r['convergence_s']} s, {r['polls_per_s']} polls/s (idle and rollout)"
            )
            continue
        idle, rollout = r["idle"], r["rollout"]
        up = idle.get("up-to-date", {})
        changed = rollout.get("updated", {})
        print(
            f"{r['agents']:>6}  {r['setup_s']:>7}  {r['first_install_s']:>13}  {idle['polls_per_s']:>12}  "
            f"{up.get('metadata_bytes', '-'):>11}  {idle['cpu_ms_per_poll']:>16}  "
            f"{changed.get('metadata_bytes', '-'):>6} + {changed.get('target_bytes', '-'):<22}  "
            f"{r['convergence_s']:>13}  {rollout['polls_per_s']:>17}  {rollout['cpu_ms_per_poll']:>22}  "
            f"{r['rss_mib_installed']:>7}"
        )
    by = {r["agents"]: r for r in results}
    if 10_000 in by and 1_000 in by:
        print(f"convergence 10,000 / 1,000 agents: {by[10_000]['convergence_s'] / by[1_000]['convergence_s']:.2f}x")
    if args.json:
        meta = {"command": shlex.join(sys.argv), "at": datetime.now(UTC).isoformat(), "cpus": os.cpu_count()}
        args.json.write_text(json.dumps({**meta, "results": results}, indent=2))


def _fleet() -> Any:
    from actuation.contract import load_fleets

    return load_fleets().get("public-cars")


def _publish(repo: Any, fleet: Any, version: int) -> None:
    """A real model of the vehicle task's width (accel = gain x the newest acceleration, a constant
    OOD score), judged, attested and signed into the fleet's role as the release CLI would."""
    from actuation.contract import ATTESTATION_FILE, Check, PolicyRef, Verdict, policy_digest
    from actuation.release.publish import MODEL_FILE, Approved, publish
    from actuation.signing import GUARDRAIL, attest
    from fieldloop.registry import MANIFEST_FILE

    onnx_bytes, manifest = _model(fleet.task, version)
    verdict = Verdict(
        verdict="pass",
        model=MODEL,
        version=version,
        task=fleet.task,
        tenant=fleet.tenant,
        fleets=[fleet.name],
        policy=PolicyRef(name=fleet.task, version=1, sha256=policy_digest(fleet.task)),
        checks=[Check.measure("bench", "edge", 1.0, "<=", 2.0)],
        mlflow_uri=f"models:/{MODEL}/{version}",
        run_id="bench",
        lineage={},
        judged_at=datetime.now(UTC),
    )
    subjects = {MODEL_FILE: hashlib.sha256(onnx_bytes).hexdigest(), MANIFEST_FILE: hashlib.sha256(manifest).hexdigest()}
    envelope = attest(verdict, subjects, repo.keys.signer(GUARDRAIL))
    files = {MODEL_FILE: onnx_bytes, MANIFEST_FILE: manifest, ATTESTATION_FILE: envelope}
    publish(repo, Approved(MODEL, version, fleet, verdict, "bench", files))


def _model(task: str, version: int) -> tuple[bytes, bytes]:
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from actuation.release.publish import MODEL_FILE
    from fieldloop.datasets import layout
    from fieldloop.registry import EdgeBuild, EdgeManifest

    lay = layout(task)
    w = np.zeros((lay.width, 2), dtype=np.float32)
    w[lay.index("accel_mps2"), 0] = 1.0 / version
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["outputs"]),
        ],
        "bench",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", lay.width])],
        [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([0, 0.05], dtype=np.float32), "b")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 9
    data = proto.SerializeToString()
    x = np.random.default_rng(version).normal(size=(4, lay.width)).astype(np.float32)
    outputs = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"features": x})[0]
    build = EdgeBuild(
        file=MODEL_FILE,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        p50_us=1,
        p99_us=2,
        max_abs_diff=0,
        max_abs_diff_per_output=[0, 0],
        self_test_outputs=outputs.tolist(),
    )
    manifest = EdgeManifest(
        task=task,
        model=MODEL,
        input_name="features",
        input_dim=lay.width,
        outputs=["accel_mps2", "ood_score"],
        latency="bench",
        self_test_inputs=x.tolist(),
        self_test_tolerance=1e-3,
        builds={"int8": build},
    )
    return data, manifest.to_json().encode()


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB; the peak so far


def _await(url: str) -> None:
    import requests

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/health", timeout=1).ok:
                return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise SystemExit(f"nginx did not answer on {url}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
