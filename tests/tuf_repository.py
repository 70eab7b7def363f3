"""A release repository of the tests' own, in memory, in the layout :mod:`actuation.contract` names.

The real repository (``actuation.release``) is built elsewhere; this one makes the same files
with python-tuf's Metadata API, so the agent is tested against the contract, not against
another helper's code: consistent snapshots on (``<version>.<role>.json``, targets as
``<sha256>.<name>``), the top-level ``targets`` role signs the guardrail keys target and
delegates ``<fleet>/*`` to ``fleet-<fleet>``, which signs the release pointer and the three
files of each release; :meth:`ReleaseRepository.stage` publishes a format-2 pointer naming a
rollout stage and :meth:`ReleaseRepository.rollback` one without. Attestations are made with
:func:`actuation.signing.attest` and a :class:`~actuation.signing.KeyStore`'s ``guardrail`` key.

:class:`MemoryFetcher` serves the files to ``tuf.ngclient`` without HTTP (python-tuf's own
``RepositorySimulator`` pattern), counting bytes; tests tamper with ``repo.files`` to attack.
:meth:`ReleaseRepository.write` puts the files on disk for a real HTTP server.
:func:`tiny_model` builds a real ONNX model with its :class:`~fieldloop.registry.EdgeManifest`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from securesystemslib.signer import CryptoSigner
from tuf.api.exceptions import DownloadError, DownloadHTTPError
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

from actuation.contract import (
    ATTESTATION_FILE,
    GUARDRAIL_KEYS_TARGET,
    MANIFEST_FILE,
    POINTER_FILE,
    Campaigns,
    Check,
    PolicyRef,
    Release,
    ReleaseFile,
    ReleasePointer,
    RuntimeLimits,
    Stage,
    Verdict,
    campaigns_path,
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

BASE_URL = "http://release.test"
MODEL_FILE = "student.int8.onnx"
TASK = "vehicle-longitudinal"


@dataclass(frozen=True)
class EdgeFiles:
    """A model's int8 ONNX bytes and its manifest."""

    onnx: bytes
    manifest: EdgeManifest

    @property
    def manifest_bytes(self) -> bytes:
        return self.manifest.to_json().encode()


def tiny_model(
    task: str = TASK, model: str = "fieldloop.vehicle-longitudinal", accel_gain: float = 1.0, ood_bias: float = -3.0
) -> EdgeFiles:
    """A real ONNX model of the task's width: ``accel_mps2`` = gain × the newest frame's
    acceleration, ``ood_score`` = sigmoid(bias); dynamically quantized to int8 as the edge build is."""
    import tempfile

    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    lay = layout(task)
    rng = np.random.default_rng(7)
    w_accel = (rng.normal(0, 1e-3, (lay.width, 1))).astype(np.float32)
    w_accel[lay.index("accel_mps2"), 0] = accel_gain
    w_ood = np.zeros((lay.width, 1), dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "w_accel"], ["accel"]),
            helper.make_node("MatMul", ["features", "w_ood"], ["ood_logit0"]),
            helper.make_node("Add", ["ood_logit0", "b_ood"], ["ood_logit"]),
            helper.make_node("Sigmoid", ["ood_logit"], ["ood"]),
            helper.make_node("Concat", ["accel", "ood"], ["outputs"], axis=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", lay.width])],
        [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, ["batch", 2])],
        [
            numpy_helper.from_array(w_accel, "w_accel"),
            numpy_helper.from_array(w_ood, "w_ood"),
            numpy_helper.from_array(np.array([ood_bias], dtype=np.float32), "b_ood"),
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 9
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "student.onnx", Path(tmp) / MODEL_FILE
        onnx.save(proto, str(fp32))
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
        data = int8.read_bytes()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(int8), options, providers=["CPUExecutionProvider"])
    x = rng.normal(0, 1, (8, lay.width)).astype(np.float32)
    outputs = session.run(None, {"features": x})[0]
    build = EdgeBuild(
        file=MODEL_FILE,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        p50_us=10.0,
        p99_us=20.0,
        max_abs_diff=0.01,
        max_abs_diff_per_output=[0.01, 0.0],
        self_test_outputs=outputs.tolist(),
    )
    manifest = EdgeManifest(
        task=task,
        model=model,
        input_name="features",
        input_dim=lay.width,
        outputs=["accel_mps2", "ood_score"],
        latency="test",
        self_test_inputs=x.tolist(),
        self_test_tolerance=1e-3,
        builds={"int8": build},
    )
    return EdgeFiles(data, manifest)


def verdict_for(
    model: str, version: int, fleets: list[str], tenant: str | None = None, task: str = TASK, passed: bool = True
) -> Verdict:
    check = Check.measure("edge.p99_us", "edge", 20.0 if passed else 5000.0, "<=", 2000.0, "µs")
    return Verdict(
        verdict="pass" if passed else "fail",
        model=model,
        version=version,
        task=task,
        tenant=tenant,
        fleets=fleets,
        policy=PolicyRef(name=task, version=1, sha256=policy_digest(task)),
        checks=[check],
        mlflow_uri=f"models:/{model}/{version}",
        run_id="0" * 32,
        lineage={},
        judged_at=datetime.now(UTC),
    )


class ReleaseRepository:
    """See the module docstring. ``files`` maps a URL path under :data:`BASE_URL` to its bytes."""

    def __init__(self, home: Path, fleets: tuple[str, ...] = ("public-cars",), expires: timedelta = timedelta(days=1)):
        self.expires = expires
        self.signers = {r: CryptoSigner.generate_ed25519() for r in ("root", "targets", "snapshot", "timestamp")}
        self.fleets = fleets
        for fleet in fleets:
            self.signers[fleet_role(fleet)] = CryptoSigner.generate_ed25519()
        self.keystore = KeyStore(home)
        self.keystore.generate(GUARDRAIL)
        self.files: dict[str, bytes] = {}
        self.history: list[dict[str, bytes]] = []  # files after each publish, for rollback attacks
        root = Root(expires=self._expiry(timedelta(days=365)), consistent_snapshot=True)
        for role in ("root", "targets", "snapshot", "timestamp"):
            root.add_key(self.signers[role].public_key, role)
        self.root = Metadata(root)
        self.targets = Metadata(Targets(expires=self._expiry()))
        self.targets.signed.delegations = Delegations(keys={}, roles={})
        self.delegated: dict[str, Metadata] = {}
        for fleet in fleets:
            role = fleet_role(fleet)
            key = self.signers[role].public_key
            self.targets.signed.delegations.keys[key.keyid] = key
            self.targets.signed.delegations.roles[role] = DelegatedRole(role, [key.keyid], 1, True, fleet_paths(fleet))
            self.delegated[role] = Metadata(Targets(expires=self._expiry()))
        self.snapshot = Metadata(Snapshot(expires=self._expiry()))
        self.timestamp = Metadata(Timestamp(expires=self._expiry()))
        self.trust_guardrail_keys([self.keystore.public_key(GUARDRAIL)])
        self._signed_root = self._sign(self.root, "root")
        self.files["metadata/1.root.json"] = self._signed_root

    def _expiry(self, delta: timedelta | None = None) -> datetime:
        return (datetime.now(UTC) + (delta or self.expires)).replace(microsecond=0)

    @property
    def root_bytes(self) -> bytes:
        return self._signed_root

    # -- content -------------------------------------------------------------------------
    def trust_guardrail_keys(self, keys: list[Any]) -> None:
        data = json.dumps({"keys": {k.keyid: k.to_dict() for k in keys}}, sort_keys=True).encode()
        self._add_target(self.targets, GUARDRAIL_KEYS_TARGET, data)

    def _add_target(self, md: Metadata, path: str, data: bytes) -> TargetFile:
        info = TargetFile.from_data(path, data, ["sha256"])
        md.signed.targets[path] = info
        directory, _, name = path.rpartition("/")
        self.files[f"targets/{directory}/{info.hashes['sha256']}.{name}"] = data
        return info

    def release(
        self,
        fleet: str,
        version: int,
        edge: EdgeFiles | None = None,
        *,
        model: str | None = None,
        tenant: str | None = None,
        fleet_tenant: str | None = None,
        verdict: Verdict | None = None,
        subjects: Mapping[str, str] | None = None,
        signer: Any = None,
        limits: RuntimeLimits | None = None,
        publish: bool = True,
    ) -> Release:
        """Publish ``edge`` as ``model@version`` to ``fleet`` (attested, pointed at); the knobs make attacks."""
        edge = edge or tiny_model()
        model = model or edge.manifest.model
        role = self.delegated[fleet_role(fleet)]
        files = {}
        for file, data in ((MODEL_FILE, edge.onnx), (MANIFEST_FILE, edge.manifest_bytes)):
            files[file] = self._add_target(role, model_target_path(fleet, model, version, file), data)
        digests = {f: i.hashes["sha256"] for f, i in files.items()}
        verdict = verdict or verdict_for(model, version, [fleet], tenant)
        envelope = attest(verdict, subjects or digests, signer or self.keystore.signer(GUARDRAIL))
        att = self._add_target(role, model_target_path(fleet, model, version, ATTESTATION_FILE), envelope)

        def ref(info: TargetFile) -> ReleaseFile:
            return ReleaseFile(path=info.path, sha256=info.hashes["sha256"], length=info.length)

        release = Release(
            model=model,
            version=version,
            task=edge.manifest.task,
            tenant=tenant,
            model_file=ref(files[MODEL_FILE]),
            manifest=ref(files[MANIFEST_FILE]),
            attestation=ref(att),
            limits=limits or load_runtime_limits(TASK),
        )
        pointer = ReleasePointer(fleet=fleet, tenant=fleet_tenant, issued_at=datetime.now(UTC), active=release)
        self._add_target(role, release_pointer_path(fleet), pointer.model_dump_json().encode())
        if publish:
            self.publish()
        return release

    def point(self, pointer: ReleasePointer) -> None:
        """Publish ``pointer`` as its fleet's release pointer, as it is (attacks: a pointer made up)."""
        role = self.delegated[fleet_role(pointer.fleet)]
        self._add_target(role, release_pointer_path(pointer.fleet), pointer.model_dump_json().encode())
        self.publish()

    def stage(
        self,
        fleet: str,
        active: Release,
        candidate: Release,
        *,
        mode: str,
        share: float,
        rollout_id: str = "rollout-1",
        name: str | None = None,
        index: int = 0,
        fleet_tenant: str | None = None,
        disagreement_threshold: float | None = None,
    ) -> ReleasePointer:
        """Publish a format-2 pointer: ``active`` is the champion, ``candidate`` runs in a stage
        (publish the candidate's files first with ``release(..., publish=False)``)."""
        stage = Stage(
            rollout_id=rollout_id,
            name=name or mode,
            index=index,
            mode=mode,
            share=share,
            candidate=candidate,
            disagreement_threshold=disagreement_threshold,
        )
        pointer = ReleasePointer(fleet=fleet, tenant=fleet_tenant, issued_at=datetime.now(UTC), active=active,
                                 stage=stage)  # fmt: skip
        self.point(pointer)
        return pointer

    def campaigns(self, campaigns: Campaigns, fleet: str | None = None) -> None:
        """Publish ``campaigns`` as ``fleet``'s (default: the fleet it names) signed campaigns target."""
        fleet = fleet or campaigns.fleet
        role = self.delegated[fleet_role(fleet)]
        self._add_target(role, campaigns_path(fleet), campaigns.model_dump_json().encode())
        self.publish()

    def rollback(self, fleet: str, active: Release, fleet_tenant: str | None = None) -> ReleasePointer:
        """Publish a newer pointer naming ``active`` and no stage, as a halted rollout does."""
        pointer = ReleasePointer(fleet=fleet, tenant=fleet_tenant, issued_at=datetime.now(UTC), active=active)
        self.point(pointer)
        return pointer

    # -- metadata ------------------------------------------------------------------------
    def _sign(self, md: Metadata, role: str, signer: Any = None) -> bytes:
        md.signatures.clear()
        md.sign(signer or self.signers[role])
        return md.to_bytes(JSONSerializer(compact=False))

    def publish(self) -> None:
        """A new version of every targets role, snapshot and timestamp, signed and served."""
        bump = 1 if self.history else 0  # the first publish serves version 1 of everything
        for role, md in (("targets", self.targets), *self.delegated.items()):
            md.signed.version += bump
            md.signed.expires = self._expiry()
            self.files[f"metadata/{md.signed.version}.{role}.json"] = self._sign(md, role)
            self.snapshot.signed.meta[f"{role}.json"] = MetaFile(md.signed.version)
        self.snapshot.signed.version += bump
        self.snapshot.signed.expires = self._expiry()
        self.files[f"metadata/{self.snapshot.signed.version}.snapshot.json"] = self._sign(self.snapshot, "snapshot")
        self.timestamp.signed.version += bump
        self.timestamp.signed.expires = self._expiry()
        self.timestamp.signed.snapshot_meta = MetaFile(self.snapshot.signed.version)
        self.files["metadata/timestamp.json"] = self._sign(self.timestamp, "timestamp")
        self.history.append(dict(self.files))

    def resign(self, role: str, signer: Any = None, *, unsigned: bool = False) -> None:
        """Serve ``role``'s current version signed by ``signer`` (or by nobody), nothing else changed."""
        md = self.delegated.get(role) or {"targets": self.targets, "snapshot": self.snapshot}[role]
        data = self._sign(md, role, signer)
        if unsigned:
            doc = json.loads(data)
            doc["signatures"] = []
            data = json.dumps(doc).encode()
        self.files[f"metadata/{md.signed.version}.{role}.json"] = data

    def rotate_root(self, *, keep_old: bool) -> None:
        """A new root version with a new root key, signed by the new key (and the old one if ``keep_old``,
        as a rotation must be for a device to follow: the old root's threshold signs the new root)."""
        old = self.signers["root"]
        new = CryptoSigner.generate_ed25519()
        self.root.signed.revoke_key(old.public_key.keyid, "root")
        self.root.signed.add_key(new.public_key, "root")
        self.root.signed.version += 1
        self.signers["root"] = new
        self.root.signatures.clear()
        for signer in (new, old) if keep_old else (new,):
            self.root.sign(signer, append=True)
        data = self.root.to_bytes(JSONSerializer(compact=False))
        self.files[f"metadata/{self.root.signed.version}.root.json"] = data

    def rotate_fleet_key(self, fleet: str) -> Any:
        """The fleet's role delegated to a new key (in the next published targets); returns the old signer."""
        role = fleet_role(fleet)
        old, new = self.signers[role], CryptoSigner.generate_ed25519()
        delegations = self.targets.signed.delegations
        del delegations.keys[old.public_key.keyid]
        delegations.keys[new.public_key.keyid] = new.public_key
        delegations.roles[role].keyids = [new.public_key.keyid]
        self.signers[role] = new
        return old

    def target_url(self, path: str) -> str:
        for md in (self.targets, *self.delegated.values()):
            if path in md.signed.targets:
                directory, _, name = path.rpartition("/")
                return f"targets/{directory}/{md.signed.targets[path].hashes['sha256']}.{name}"
        raise KeyError(path)

    def write(self, directory: Path) -> None:
        """The served files under ``directory`` (``metadata/``, ``targets/``), for an HTTP server."""
        for name, data in self.files.items():
            path = directory / name
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)


class MemoryFetcher(FetcherInterface):
    """Serves ``repo.files`` to ngclient; counts requests and bytes; ``offline`` fails every fetch.
    :attr:`target_downloads` are the requests for a release's files (not metadata, not a pointer)."""

    def __init__(self, repo: ReleaseRepository) -> None:
        self.repo = repo
        self.offline = False
        self.requests: list[str] = []
        self.bytes = 0

    def _fetch(self, url: str) -> Iterator[bytes]:
        if self.offline:
            raise DownloadError(f"connection refused: {url}")
        path = url.removeprefix(BASE_URL + "/")
        self.requests.append(path)
        if path not in self.repo.files:
            raise DownloadHTTPError(f"404 {path}", 404)
        data = self.repo.files[path]
        self.bytes += len(data)
        return iter([data[i : i + 65536] for i in range(0, len(data), 65536)] or [b""])

    @property
    def target_downloads(self) -> list[str]:
        return [r for r in self.requests if r.startswith("targets/") and not r.endswith("." + POINTER_FILE)]
