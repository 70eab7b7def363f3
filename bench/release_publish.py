"""What a release costs: a publish (time, bytes written) and a device's update check (time, bytes
fetched over HTTP), each against a baseline measured in the same run.

Everything runs in a temporary home with its own nginx (the stack's release component) on a
free loopback port, so the operator's repository is never touched:

* publish: signing a version into a fleet's role (three files, the pointer, the fleet role,
  snapshot, timestamp), against a plain atomic copy of the same three files. MLflow's
  download and the attestation check before it are not included (``--model-bytes`` of
  random bytes stand in for the ONNX file; the repository only hashes it);
* update check: a device (python-tuf's ngclient over HTTP) that is current, against the
  same device when a new version was published since (it fetches the new metadata and
  the new model's three files). Bytes are counted at the fetcher.

    .venv/bin/python bench/release_publish.py --model-bytes 200000 --repeat 5
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-bytes", type=int, default=200_000, help="size of the stand-in ONNX file (bytes)")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds; medians are reported")
    parser.add_argument("--fleet", default="public-cars")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fieldloop-bench-release-") as tmp:
        run(Path(tmp), args.model_bytes, args.repeat, args.fleet)


def run(tmp: Path, model_bytes: int, repeat: int, fleet_name: str) -> None:
    from actuation.contract import load_fleets
    from actuation.release.repository import Repository, _write_atomic
    from actuation.signing import KeyStore
    from fieldloop.config import load_config
    from fieldloop.stack import Stack

    cfg = load_config({"FIELDLOOP_HOME": str(tmp / "home"), "FIELDLOOP_RELEASE_PORT": str(_free_port())})
    (tmp / "home").mkdir()
    repo = Repository(cfg.release_dir, KeyStore(cfg.home), load_fleets())
    repo.init()
    fleet = load_fleets().get(fleet_name)
    stack = Stack(cfg, only=["release"])
    for comp in stack.components:  # not stack.up(): that resolves the JVM jars too
        comp.start()
    try:
        _await(cfg.release.base_url)
        device = tmp / "device"
        _update(repo, cfg.release.base_url, device, fleet_name)  # provisioned and current

        publish_s, copy_s, check_s, new_s = [], [], [], []
        publish_bytes = payload_bytes = check_bytes = new_bytes = 0
        for version in range(1, repeat + 1):
            approved = _approved(repo, fleet, version, model_bytes)
            t0 = time.perf_counter()
            for name, data in approved.files.items():
                _write_atomic(tmp / "copy" / f"{version}.{name}", data)
            copy_s.append(time.perf_counter() - t0)

            from actuation.release.publish import publish

            t0 = time.perf_counter()
            done = publish(repo, approved)
            publish_s.append(time.perf_counter() - t0)
            publish_bytes = sum(Path(p).stat().st_size for p in done.written)
            payload_bytes = sum(len(d) for d in approved.files.values())

            seconds, new_bytes = _update(repo, cfg.release.base_url, device, fleet_name)
            new_s.append(seconds)
            seconds, check_bytes = _update(repo, cfg.release.base_url, device, fleet_name)
            check_s.append(seconds)
    finally:
        stack.down()

    med = statistics.median
    fleets = len(load_fleets().fleet)
    print(f"release repository, {fleets} fleets, model file {model_bytes:,} B, {repeat} rounds (medians)")
    print(
        f"publish:      {med(publish_s) * 1e3:7.1f} ms = {med(publish_s) / med(copy_s):5.1f}x a plain atomic copy of "
        f"its 3 files ({med(copy_s) * 1e3:.1f} ms); writes {publish_bytes:,} B = "
        f"{publish_bytes / payload_bytes:.3f}x the files' {payload_bytes:,} B"
    )
    print(f"update check, nothing new: {med(check_s) * 1e3:7.1f} ms, {check_bytes:,} B fetched (baseline)")
    print(
        f"update check, a new model: {med(new_s) * 1e3:7.1f} ms = {med(new_s) / med(check_s):5.1f}x, "
        f"{new_bytes:,} B fetched = {new_bytes / check_bytes:.0f}x"
    )


def _approved(repo, fleet, version: int, model_bytes: int):
    from actuation.contract import ATTESTATION_FILE, Check, PolicyRef, Verdict, policy_digest
    from actuation.release.publish import MODEL_FILE, Approved
    from actuation.signing import GUARDRAIL, attest
    from fieldloop.registry import MANIFEST_FILE, EdgeBuild, EdgeManifest

    model = f"fieldloop.{fleet.task}"
    onnx = os.urandom(model_bytes)
    build = EdgeBuild(
        file=MODEL_FILE,
        bytes=len(onnx),
        sha256=hashlib.sha256(onnx).hexdigest(),
        p50_us=1,
        p99_us=2,
        max_abs_diff=0,
        max_abs_diff_per_output=[0],
        self_test_outputs=[[0.0]],
    )
    manifest = EdgeManifest(
        task=fleet.task,
        model=model,
        input_name="features",
        input_dim=1,
        outputs=["y"],
        latency="bench",
        self_test_inputs=[[0.0]],
        self_test_tolerance=1e-3,
        builds={"int8": build},
    ).to_json()
    verdict = Verdict(
        verdict="pass",
        model=model,
        version=version,
        task=fleet.task,
        tenant=fleet.tenant,
        fleets=[fleet.name],
        policy=PolicyRef(name=fleet.task, version=1, sha256=policy_digest(fleet.task)),
        checks=[Check.measure("bench", "edge", 1.0, "<=", 2.0)],
        mlflow_uri=f"models:/{model}/{version}",
        run_id="bench",
        lineage={},
        judged_at=datetime.now(UTC),
    )
    subjects = {MODEL_FILE: build.sha256, MANIFEST_FILE: hashlib.sha256(manifest.encode()).hexdigest()}
    envelope = attest(verdict, subjects, repo.keys.signer(GUARDRAIL))
    files = {MODEL_FILE: onnx, MANIFEST_FILE: manifest.encode(), ATTESTATION_FILE: envelope}
    return Approved(model, version, fleet, verdict, "bench", files)


def _update(repo, base_url: str, device: Path, fleet: str) -> tuple[float, int]:
    """One update cycle of a device: refresh, read the pointer, fetch what it names if new."""
    import json

    from tuf.ngclient import Updater
    from tuf.ngclient.urllib3_fetcher import Urllib3Fetcher

    class Counting(Urllib3Fetcher):
        fetched = 0

        def _fetch(self, url: str):
            for chunk in super()._fetch(url):
                Counting.fetched += len(chunk)
                yield chunk

    (device / "metadata").mkdir(parents=True, exist_ok=True)
    (device / "targets").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    updater = Updater(
        str(device / "metadata"),
        f"{base_url}/metadata/",
        str(device / "targets"),
        f"{base_url}/targets/",
        fetcher=Counting(),
        bootstrap=repo.root_bytes(1),
    )
    updater.refresh()
    info = updater.get_targetinfo(f"{fleet}/release.json")
    if info is not None:
        path = updater.find_cached_target(info) or updater.download_target(info)
        active = json.loads(Path(path).read_bytes())["active"]
        for role in ("model_file", "manifest", "attestation"):
            target = updater.get_targetinfo(active[role]["path"])
            if updater.find_cached_target(target) is None:
                updater.download_target(target)
    return time.perf_counter() - t0, Counting.fetched


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
