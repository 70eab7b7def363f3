"""Edge agent: what an update check costs, and what the agent's loop adds to inference.

A release repository in the contract's layout (``actuation.contract``: consistent snapshots,
the top-level role delegating ``public-cars/*`` to ``fleet-public-cars``, the guardrail keys
target, a pointer and three files per release, an attestation from
``actuation.signing.attest``) is built in a temp directory and served by a real
``http.server`` on 127.0.0.1; the agent fetches it over HTTP through python-tuf's urllib3
fetcher, wrapped to count bytes. The model is an MLP of the vehicle student's size
(53 -> 24 -> 16 -> 2, ~1.8k parameters, OOD score through a sigmoid), dynamically quantized
to int8 as the edge build is.

Printed, medians over ``--cycles``:

* an update cycle with nothing new (baseline): time and bytes (the timestamp, and the root
  probe for a rotation);
* an update cycle with a new model each time: download, attestation check, install in the
  inactive slot, self-test, switch; time and bytes, and both as ratios to the baseline;
* inference at batch 1 on one thread, ``--runs`` calls on simulated vehicle frames: bare
  ONNX Runtime ``session.run`` on precomputed feature vectors (baseline) against
  ``Agent.command`` (feature window, the same session, the safety monitor: what stands
  between a frame and the actuator), ``Agent.infer`` (that and one telemetry record into
  memory) and ``Agent.infer`` with the edge SDK's disk spool (no broker: the records stay
  spooled, the SDK's sender retries beside it); p50 and p99 µs and ratios to the baseline.

Usage: .venv/bin/python bench/agent_loop.py [--cycles 20] [--runs 5000] [--json PATH]
Needs no running service.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import logging
import os
import platform
import shlex
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer
from tuf.ngclient import FetcherInterface
from tuf.ngclient.urllib3_fetcher import Urllib3Fetcher

from actuation.agent import Agent, DeviceConfig, provision
from actuation.agent.sources import simulated_frames
from actuation.agent.telemetry import MemorySink, producer
from actuation.contract import (
    ATTESTATION_FILE,
    GUARDRAIL_KEYS_TARGET,
    MANIFEST_FILE,
    Check,
    PolicyRef,
    Release,
    ReleaseFile,
    ReleasePointer,
    Verdict,
    fleet_paths,
    fleet_role,
    load_runtime_limits,
    model_target_path,
    policy_digest,
    release_pointer_path,
)
from actuation.signing import GUARDRAIL, KeyStore, attest
from fieldloop.datasets import layout
from fieldloop.registry import EdgeBuild, EdgeManifest

TASK, FLEET, MODEL, MODEL_FILE = (
    "vehicle-longitudinal",
    "public-cars",
    "fieldloop.vehicle-longitudinal",
    "student.int8.onnx",
)


# the model ----------------------------------------------------------------------------------
def student(seed: int, directory: Path) -> tuple[bytes, EdgeManifest]:
    """An int8 MLP of the student's size and its manifest (self-test outputs from the int8 file)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    width = layout(TASK).width
    rng = np.random.default_rng(seed)
    sizes = [(width, 24), (24, 16), (16, 2)]
    weights = [rng.normal(0, 1 / np.sqrt(i), (i, o)).astype(np.float32) for i, o in sizes]
    nodes = [
        helper.make_node("MatMul", ["features", "w0"], ["h0"]),
        helper.make_node("Relu", ["h0"], ["r0"]),
        helper.make_node("MatMul", ["r0", "w1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("MatMul", ["r1", "w2"], ["y"]),
        helper.make_node("Split", ["y"], ["accel", "ood_logit"], axis=1, num_outputs=2),
        helper.make_node("Sigmoid", ["ood_logit"], ["ood"]),
        helper.make_node("Concat", ["accel", "ood"], ["outputs"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "student",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 9
    fp32, int8 = directory / f"student-{seed}.onnx", directory / f"student-{seed}.int8.onnx"
    onnx.save(proto, str(fp32))
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    data = int8.read_bytes()
    x = rng.normal(0, 1, (8, width)).astype(np.float32)
    out = ort_session(int8).run(None, {"features": x})[0]
    build = EdgeBuild(
        file=MODEL_FILE, bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), p50_us=0, p99_us=0,
        max_abs_diff=0, max_abs_diff_per_output=[0, 0], self_test_outputs=out.tolist(),
    )  # fmt: skip
    manifest = EdgeManifest(
        task=TASK, model=MODEL, input_name="features", input_dim=width, outputs=["accel_mps2", "ood_score"],
        latency="bench", self_test_inputs=x.tolist(), self_test_tolerance=1e-3, builds={"int8": build},
    )  # fmt: skip
    return data, manifest


def ort_session(path: Path) -> Any:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# the repository ---------------------------------------------------------------------------------
class Repository:
    """The contract's layout on disk, one fleet; each :meth:`publish` a new version of every role."""

    def __init__(self, site: Path, home: Path) -> None:
        self.site = site
        self.signers = {r: CryptoSigner.generate_ed25519() for r in ("root", "targets", "snapshot", "timestamp")}
        self.signers[fleet_role(FLEET)] = fleet = CryptoSigner.generate_ed25519()
        self.keys = KeyStore(home)
        self.keys.generate(GUARDRAIL)
        root = Root(expires=self._expiry(365), consistent_snapshot=True)
        for role in ("root", "targets", "snapshot", "timestamp"):
            root.add_key(self.signers[role].public_key, role)
        self.root = Metadata(root)
        key = fleet.public_key
        delegation = DelegatedRole(fleet_role(FLEET), [key.keyid], 1, True, fleet_paths(FLEET))
        self.roles = {
            "targets": Metadata(Targets(expires=self._expiry())),
            fleet_role(FLEET): Metadata(Targets(expires=self._expiry())),
        }
        self.roles["targets"].signed.delegations = Delegations({key.keyid: key}, {delegation.name: delegation})
        self.snapshot, self.timestamp = Metadata(Snapshot(expires=self._expiry())), Metadata(Timestamp())
        public = self.keys.public_key(GUARDRAIL)
        self._target("targets", GUARDRAIL_KEYS_TARGET, json.dumps({"keys": {public.keyid: public.to_dict()}}).encode())
        self.root_bytes = self._write("1.root.json", self.root, "root")
        self.published = 0

    @staticmethod
    def _expiry(days: int = 7) -> datetime:
        return (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0)

    def _write(self, name: str, md: Metadata, role: str) -> bytes:
        md.signatures.clear()
        md.sign(self.signers[role])
        data = md.to_bytes(JSONSerializer())
        (self.site / "metadata").mkdir(parents=True, exist_ok=True)
        (self.site / "metadata" / name).write_bytes(data)
        return data

    def _target(self, role: str, path: str, data: bytes) -> TargetFile:
        info = TargetFile.from_data(path, data, ["sha256"])
        self.roles[role].signed.targets[path] = info
        directory, _, name = path.rpartition("/")
        (self.site / "targets" / directory).mkdir(parents=True, exist_ok=True)
        (self.site / "targets" / directory / f"{info.hashes['sha256']}.{name}").write_bytes(data)
        return info

    def release(self, version: int, onnx: bytes, manifest: EdgeManifest) -> None:
        role = fleet_role(FLEET)
        files = {
            f: self._target(role, model_target_path(FLEET, MODEL, version, f), d)
            for f, d in ((MODEL_FILE, onnx), (MANIFEST_FILE, manifest.to_json().encode()))
        }
        verdict = Verdict(
            verdict="pass", model=MODEL, version=version, task=TASK, tenant=None, fleets=[FLEET],
            policy=PolicyRef(name=TASK, version=1, sha256=policy_digest(TASK)),
            checks=[Check.measure("edge.p99_us", "edge", 20.0, "<=", 2000.0, "µs")],
            mlflow_uri=f"models:/{MODEL}/{version}", run_id="0" * 32, lineage={}, judged_at=datetime.now(UTC),
        )  # fmt: skip
        envelope = attest(verdict, {f: i.hashes["sha256"] for f, i in files.items()}, self.keys.signer(GUARDRAIL))
        att = self._target(role, model_target_path(FLEET, MODEL, version, ATTESTATION_FILE), envelope)

        def ref(i: TargetFile) -> ReleaseFile:
            return ReleaseFile(path=i.path, sha256=i.hashes["sha256"], length=i.length)

        active = Release(
            model=MODEL, version=version, task=TASK, tenant=None, model_file=ref(files[MODEL_FILE]),
            manifest=ref(files[MANIFEST_FILE]), attestation=ref(att), limits=load_runtime_limits(TASK),
        )  # fmt: skip
        pointer = ReleasePointer(fleet=FLEET, tenant=None, issued_at=datetime.now(UTC), active=active)
        self._target(role, release_pointer_path(FLEET), pointer.model_dump_json().encode())
        self.publish()

    def publish(self) -> None:
        bump = 1 if self.published else 0
        for name, md in self.roles.items():
            md.signed.version += bump
            self._write(f"{md.signed.version}.{name}.json", md, name)
            self.snapshot.signed.meta[f"{name}.json"] = MetaFile(md.signed.version)
        self.snapshot.signed.version += bump
        self._write(f"{self.snapshot.signed.version}.snapshot.json", self.snapshot, "snapshot")
        self.timestamp.signed.version += bump
        self.timestamp.signed.expires = self._expiry(1)
        self.timestamp.signed.snapshot_meta = MetaFile(self.snapshot.signed.version)
        self._write("timestamp.json", self.timestamp, "timestamp")
        self.published += 1


class CountingFetcher(FetcherInterface):
    """python-tuf's urllib3 fetcher, counting the bytes it receives."""

    def __init__(self) -> None:
        self.inner = Urllib3Fetcher()
        self.bytes = 0

    def _fetch(self, url: str) -> Iterator[bytes]:
        for chunk in self.inner._fetch(url):
            self.bytes += len(chunk)
            yield chunk


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


# measurements ---------------------------------------------------------------------------------
def cycles(agent: Agent, fetcher: CountingFetcher, n: int, before: Any = None) -> dict[str, float]:
    times, sizes = [], []
    for i in range(n):
        if before:
            before(i)
        fetcher.bytes = 0
        start = time.perf_counter()
        result = agent.update()
        times.append(time.perf_counter() - start)
        sizes.append(fetcher.bytes)
        expected = "updated" if before else "up-to-date"
        assert result.state == expected, result.line
    return {"ms": float(np.median(times) * 1e3), "bytes": float(np.median(sizes))}


def latencies(call: Any, inputs: list[Any], runs: int) -> dict[str, float]:
    for i in range(min(200, runs)):
        call(inputs[i % len(inputs)])
    times = np.empty(runs)
    for i in range(runs):
        x = inputs[i % len(inputs)]
        start = time.perf_counter_ns()
        call(x)
        times[i] = time.perf_counter_ns() - start
    return {"p50_us": float(np.percentile(times, 50) / 1e3), "p99_us": float(np.percentile(times, 99) / 1e3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=20, help="update cycles per measurement")
    parser.add_argument("--runs", type=int, default=5000, help="inferences per variant")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # the spool variant has no broker, by design
    logging.getLogger("ingestion.producer").setLevel(logging.ERROR)
    logging.disable(logging.WARNING)  # the quantizer's advice for image models, on the root logger
    with tempdir() as tmp:
        site, models = tmp / "site", tmp / "models"
        models.mkdir()
        repo = Repository(site, tmp / "cloud")
        builds = [student(seed, models) for seed in range(2)]
        repo.release(1, *builds[0])
        server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(site)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        config = DeviceConfig(device_id="bench-car", fleet=FLEET, repo_url=url, task=TASK)
        device = provision(tmp / "device", config, repo.root_bytes)
        fetcher = CountingFetcher()
        agent = Agent(device, fetcher=fetcher)
        assert agent.update().state == "updated"

        nothing = cycles(agent, fetcher, args.cycles)
        new = cycles(agent, fetcher, args.cycles, before=lambda i: repo.release(i + 2, *builds[(i + 1) % 2]))
        server.shutdown()

        frames = list(itertools.islice(simulated_frames(TASK, config.rate_hz), 2000))
        warm = Agent(device, telemetry=MemorySink())
        vectors = [v.copy() for v in (warm.window.push(f) for f in frames) if v is not None]
        session = ort_session(device.slots / device_active_slot(device) / "model.onnx")
        bare = latencies(lambda v: session.run(None, {"features": v.reshape(1, -1)}), vectors, args.runs)
        command = latencies(Agent(device, telemetry=MemorySink()).command, frames, args.runs)
        in_agent = latencies(Agent(device, telemetry=MemorySink()).infer, frames, args.runs)
        spool = producer(f"127.0.0.1:{free_port()}", tmp / "spool")
        try:
            with_spool = latencies(Agent(device, telemetry=spool).infer, frames, args.runs)
        finally:
            spool.close(0.1)

    figures = {
        "update_nothing_new": nothing,
        "update_new_model": {
            **new,
            "ms_ratio": new["ms"] / nothing["ms"],
            "bytes_ratio": new["bytes"] / nothing["bytes"],
        },
        "model_bytes": len(builds[0][0]),
        "inference_bare_ort": bare,
        "inference_agent_command": {**command, **ratios(command, bare)},
        "inference_agent": {**in_agent, **ratios(in_agent, bare)},
        "inference_agent_spool": {**with_spool, **ratios(with_spool, bare)},
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": {
            "cpu": cpu(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__,
            "load": os.getloadavg(),
        },
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


def ratios(x: dict[str, float], base: dict[str, float]) -> dict[str, float]:
    return {"p50_ratio": x["p50_us"] / base["p50_us"], "p99_ratio": x["p99_us"] / base["p99_us"]}


def report(f: dict[str, Any]) -> None:
    n, u = f["update_nothing_new"], f["update_new_model"]
    print(f"update check, nothing new (baseline): {n['ms']:.1f} ms, {n['bytes']:.0f} bytes")
    print(
        f"update with a new model ({f['model_bytes']} bytes of ONNX): {u['ms']:.1f} ms ({u['ms_ratio']:.1f}x), "
        f"{u['bytes']:.0f} bytes ({u['bytes_ratio']:.1f}x)"
    )
    b = f["inference_bare_ort"]
    print(f"inference, bare onnxruntime (baseline): p50 {b['p50_us']:.1f} µs, p99 {b['p99_us']:.1f} µs")
    for key, label in (
        ("inference_agent_command", "agent command path (window, model, monitor)"),
        ("inference_agent", "agent loop (command + telemetry record)"),
        ("inference_agent_spool", "agent loop, telemetry into the SDK spool"),
    ):
        x = f[key]
        print(
            f"inference, {label}: p50 {x['p50_us']:.1f} µs ({x['p50_ratio']:.2f}x), "
            f"p99 {x['p99_us']:.1f} µs ({x['p99_ratio']:.2f}x)"
        )
    m = f["machine"]
    print(f"{m['cpu']}, {m['cores']} cores, Python {m['python']}, onnxruntime {m['onnxruntime']}, load {m['load']}")
    print(f["command"])


def device_active_slot(device: Any) -> str:
    return json.loads(device.state.read_text())["active"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


@contextlib.contextmanager
def tempdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="agent-bench-") as name:
        yield Path(name)


if __name__ == "__main__":
    main()
