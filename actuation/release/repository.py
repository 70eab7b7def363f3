"""The release repository: TUF metadata and targets under one directory, built with python-tuf's Metadata API.

Layout (``cfg.release_dir``, served as is by the stack's nginx and mirrored to S3):

* ``metadata/<N>.root.json`` (every version: a device provisioned with root 1 walks the
  chain), ``metadata/<N>.targets.json``, ``metadata/<N>.fleet-<name>.json``,
  ``metadata/<N>.snapshot.json`` and ``metadata/timestamp.json``: consistent snapshots, so
  a device fetching while a publish runs reads one complete, older state or the new one;
* ``targets/<dir>/<sha256>.<name>``: each target file under its own digest.

Roles and keys (from :class:`actuation.signing.KeyStore`): ``root`` is signed by two keys,
threshold 2 (:data:`ROOT_KEYS`, the offline keys: in production they live offline or in an
HSM and are brought out only to sign a new root); ``targets``, ``snapshot`` and
``timestamp`` each have one online key; ``targets`` signs the guardrail key
(:data:`actuation.contract.GUARDRAIL_KEYS_TARGET`) and delegates ``<fleet>/*`` to one role
per fleet (``fleet-<name>``, its own key), which signs what the fleet runs.

Every change is an :class:`_Edit` committed by :meth:`Repository._commit`: all metadata is
built and signed in memory first, then written, each file atomically (write, then rename),
in the order a device reads them backwards: root, target files, delegated roles, targets,
snapshot, and ``timestamp.json`` last, the one file whose change makes the new state visible.
One process at a time edits (a lock file beside, not under, the served directories).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from actuation.contract import (
    GUARDRAIL_KEYS_TARGET,
    Campaigns,
    Fleets,
    ReleasePointer,
    campaigns_path,
    fleet_paths,
    fleet_role,
    release_pointer_path,
)
from actuation.errors import ReleaseError
from actuation.signing import GUARDRAIL, KeyStore

logger = logging.getLogger(__name__)

ROOT_KEYS = ("root", "root-2")  # KeyStore roles of the two offline root keys
ROOT_THRESHOLD = 2
TOP_ROLES = ("root", "targets", "snapshot", "timestamp")
FLEET = "fleet"  # key of the fleet roles in EXPIRY / RENEW_WITHIN

# How long a signature is good for, and when `release refresh` renews it. The timestamp is
# short so a device notices a frozen repository within a day; the refresh runs (release DAG)
# well inside each window, so a missed run or two never lets anything expire.
EXPIRY = {
    "root": timedelta(days=365),
    "targets": timedelta(days=90),
    FLEET: timedelta(days=90),
    "snapshot": timedelta(days=7),
    "timestamp": timedelta(days=1),
}
RENEW_WITHIN = {
    "root": timedelta(days=60),
    "targets": timedelta(days=30),
    FLEET: timedelta(days=30),
    "snapshot": timedelta(days=3),
    "timestamp": timedelta(hours=12),
}

Clock = Callable[[], datetime]


def _now() -> datetime:
    return datetime.now(UTC)


def _period(role: str) -> str:
    return role if role in TOP_ROLES else FLEET


@dataclass(frozen=True)
class RoleState:
    """One role as the repository serves it now."""

    name: str
    version: int
    expires: datetime
    keyids: tuple[str, ...]
    threshold: int


@dataclass
class _Edit:
    """What one change touches; :meth:`Repository._commit` bumps, signs and writes it."""

    root: Any = None  # a new Root (Signed) to sign and publish
    root_signers: list[Any] = field(default_factory=list)  # who signs the new root; default the root keys
    roles: dict[str, Any] = field(default_factory=dict)  # targets role name -> Metadata[Targets] to bump
    files: list[tuple[str, bytes]] = field(default_factory=list)  # target path -> content
    snapshot: bool = False  # bump the snapshot even when no targets role changed
    timestamp: bool = False


class Repository:
    """The TUF repository under ``dir``; see the module docstring.

    Args:
        dir: the repository's directory (``cfg.release_dir``).
        keys: the site's signing keys.
        fleets: the fleets it serves (one delegated role each).
        check_location: called with the directory before the first byte is written (the
            residency guard's ``check``).
        clock: the current time (tests move it).
    """

    def __init__(
        self,
        dir: Path,
        keys: KeyStore,
        fleets: Fleets,
        check_location: Callable[[str], Any] | None = None,
        clock: Clock = _now,
    ) -> None:
        self.dir = Path(dir)
        self.keys = keys
        self.fleets = fleets
        self._check_location = check_location
        self._checked = False
        self.clock = clock
        self._held = threading.local()  # this thread's depth in lock(): an edit may call another

    @property
    def metadata_dir(self) -> Path:
        return self.dir / "metadata"

    @property
    def targets_dir(self) -> Path:
        return self.dir / "targets"

    def _check_residency(self) -> None:
        if self._check_location is not None and not self._checked:
            self._check_location(str(self.dir))
            self._checked = True

    # -- reading -----------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.metadata_dir / "timestamp.json").exists()

    def _require(self) -> None:
        if not self.exists():
            raise ReleaseError(f"no release repository in {self.dir}; create it with `fieldloop release init`")

    def _load(self, filename: str) -> Any:
        from tuf.api.metadata import Metadata

        path = self.metadata_dir / filename
        try:
            return Metadata.from_bytes(path.read_bytes())
        except FileNotFoundError as e:
            raise ReleaseError(
                f"{path} is missing: the repository is incomplete; restore {self.dir} from its mirror or backup"
            ) from e

    def root_version(self) -> int:
        versions = [int(p.name.split(".", 1)[0]) for p in self.metadata_dir.glob("*.root.json")]
        if not versions:
            self._require()
        return max(versions)

    def root(self) -> Any:
        return self._load(f"{self.root_version()}.root.json")

    def root_bytes(self, version: int | None = None) -> bytes:
        """The root metadata file a device is provisioned with (the newest, or ``version``)."""
        self._require()
        return (self.metadata_dir / f"{version or self.root_version()}.root.json").read_bytes()

    def timestamp(self) -> Any:
        self._require()
        return self._load("timestamp.json")

    def snapshot(self) -> Any:
        return self._load(f"{self.timestamp().signed.snapshot_meta.version}.snapshot.json")

    def targets(self, role: str = "targets", snapshot: Any = None) -> Any:
        snapshot = snapshot or self.snapshot()
        meta = snapshot.signed.meta.get(f"{role}.json")
        if meta is None:
            raise ReleaseError(f"the repository has no role {role!r}; run `fieldloop release init` to add it")
        return self._load(f"{meta.version}.{role}.json")

    def target_bytes(self, path: str, info: Any) -> bytes:
        """A target file's content, checked against its metadata."""
        data = (self.targets_dir / _hashed(path, info.hashes["sha256"])).read_bytes()
        info.verify_length_and_hashes(data)
        return data

    def roles(self) -> list[RoleState]:
        """Every role the repository serves now: top-level, then one per fleet."""
        root, timestamp = self.root(), self.timestamp()
        snapshot = self.snapshot()
        targets = self.targets("targets", snapshot)
        out = []
        for name, md in (("root", root), ("targets", targets), ("snapshot", snapshot), ("timestamp", timestamp)):
            r = root.signed.roles[name]
            out.append(RoleState(name, md.signed.version, md.signed.expires, tuple(r.keyids), r.threshold))
        delegations = targets.signed.delegations
        for name, role in (delegations.roles or {}).items() if delegations else ():
            md = self.targets(name, snapshot)
            out.append(RoleState(name, md.signed.version, md.signed.expires, tuple(role.keyids), role.threshold))
        return out

    # -- changing ------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One editor at a time (a second waits): two publishes must not both take version N+1.
        Re-entrant in one thread, so a read-then-sign (a campaign list) can hold it around an edit.

        The residency guard sees the directory first: nothing, not even the lock file, is
        written to a location outside the allowed regions.
        """
        depth = getattr(self._held, "depth", 0)
        if depth:
            self._held.depth = depth + 1
            try:
                yield
            finally:
                self._held.depth = depth
            return
        self._check_residency()
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # another thread's own open file waits here too
            self._held.depth = 1
            try:
                yield
            finally:
                self._held.depth = 0
                fcntl.flock(f, fcntl.LOCK_UN)

    def init(self) -> list[str]:
        """Create the keys and the first metadata, or add what is missing (new fleets). Idempotent.

        Returns:
            What was done, one line each (empty: nothing to do).
        """
        with self.lock():
            done = [f"created the {role!r} signing key" for role in self._ensure_keys()]
            if not self.exists():
                self._create()
                done.append(f"created the repository in {self.dir} (root v1, {len(self.fleets.fleet)} fleet roles)")
                return done
            from tuf.api.metadata import Targets

            edit = _Edit()
            targets = self.targets("targets")
            missing = [f for f in self.fleets.fleet if fleet_role(f.name) not in targets.signed.delegations.roles]
            for f in missing:
                self._delegate(targets.signed, f.name)
                edit.roles[fleet_role(f.name)] = _fresh(Targets)
            guardrail = self._guardrail_keys_file()
            info = targets.signed.targets.get(GUARDRAIL_KEYS_TARGET)
            if info is None or info.hashes.get("sha256") != hashlib.sha256(guardrail).hexdigest():
                self._add_target(targets.signed, GUARDRAIL_KEYS_TARGET, guardrail, {"kind": "guardrail-keys"})
                edit.files.append((GUARDRAIL_KEYS_TARGET, guardrail))
                done.append("signed the current guardrail key into the repository")
            if missing or edit.files:
                edit.roles["targets"] = targets
                done += [f"added the role {fleet_role(f.name)} for fleet {f.name}" for f in missing]
                self._commit(edit)
            return done

    def _ensure_keys(self) -> list[str]:
        roles = [*ROOT_KEYS, "targets", "snapshot", "timestamp", GUARDRAIL]
        roles += [fleet_role(f.name) for f in self.fleets.fleet]
        created = [r for r in roles if not self.keys.has(r)]
        for role in created:
            self.keys.generate(role)
        return created

    def _create(self) -> None:
        from tuf.api.metadata import Role, Root, Targets

        root = Root(consistent_snapshot=True, expires=self.clock() + EXPIRY["root"])
        root.version = 0  # _commit publishes version 1
        for role in TOP_ROLES:
            root.roles[role] = Role([], ROOT_THRESHOLD if role == "root" else 1)
        for key_role in ROOT_KEYS:
            root.add_key(self.keys.public_key(key_role), "root")
        for role in ("targets", "snapshot", "timestamp"):
            root.add_key(self.keys.public_key(role), role)
        targets = _fresh(Targets)
        edit = _Edit(root=root, roles={"targets": targets}, snapshot=True, timestamp=True)
        for f in self.fleets.fleet:
            self._delegate(targets.signed, f.name)
            edit.roles[fleet_role(f.name)] = _fresh(Targets)
        guardrail = self._guardrail_keys_file()
        self._add_target(targets.signed, GUARDRAIL_KEYS_TARGET, guardrail, {"kind": "guardrail-keys"})
        edit.files.append((GUARDRAIL_KEYS_TARGET, guardrail))
        self._commit(edit)

    def _delegate(self, targets: Any, fleet: str) -> None:
        from tuf.api.metadata import DelegatedRole, Delegations

        role = fleet_role(fleet)
        if targets.delegations is None:
            targets.delegations = Delegations(keys={}, roles={})
        targets.delegations.roles[role] = DelegatedRole(role, [], 1, True, paths=fleet_paths(fleet))
        targets.add_key(self.keys.public_key(role), role)

    def _guardrail_keys_file(self) -> bytes:
        entry = self.keys.entry(GUARDRAIL)
        return json.dumps({"keys": {entry.keyid: entry.public}}, sort_keys=True, indent=1).encode()

    @staticmethod
    def _add_target(targets: Any, path: str, data: bytes, custom: dict[str, Any]) -> None:
        from tuf.api.metadata import TargetFile

        info = TargetFile.from_data(path, data, ["sha256"])
        info.unrecognized_fields["custom"] = custom
        targets.targets[path] = info

    def _commit(self, edit: _Edit) -> list[Path]:
        """Bump, sign and write everything ``edit`` touches, in the order that keeps the repository consistent."""
        from tuf.api.metadata import Metadata, MetaFile, Snapshot, Timestamp

        self._check_residency()
        now = self.clock()
        writes: list[tuple[Path, bytes]] = []
        if edit.root is not None:
            edit.root.version += 1
            edit.root.expires = now + EXPIRY["root"]
            root_md = Metadata(edit.root)
            for signer in edit.root_signers or [self.keys.signer(k) for k in ROOT_KEYS]:
                root_md.sign(signer, append=True)
            self._verify_root(root_md)
            writes.append((self.metadata_dir / f"{edit.root.version}.root.json", _bytes(root_md)))
        for path, data in edit.files:
            writes.append((self.targets_dir / _hashed(path, hashlib.sha256(data).hexdigest()), data))
        if self.exists():
            snapshot, timestamp = self.snapshot(), self.timestamp()
        else:
            snapshot, timestamp = _fresh(Snapshot), _fresh(Timestamp)
            snapshot.signed.meta.clear()
        # delegated roles before the targets role that delegates to them
        for name in sorted(edit.roles, key=lambda n: n == "targets"):
            md = edit.roles[name]
            md.signed.version += 1
            md.signed.expires = now + EXPIRY[_period(name)]
            md.signatures.clear()
            md.sign(self.keys.signer(name))
            snapshot.signed.meta[f"{name}.json"] = MetaFile(md.signed.version)
            writes.append((self.metadata_dir / f"{md.signed.version}.{name}.json", _bytes(md)))
        if edit.roles or edit.snapshot:
            snapshot.signed.version += 1
            snapshot.signed.expires = now + EXPIRY["snapshot"]
            snapshot.signatures.clear()
            snapshot.sign(self.keys.signer("snapshot"))
            data = _bytes(snapshot)
            writes.append((self.metadata_dir / f"{snapshot.signed.version}.snapshot.json", data))
            timestamp.signed.snapshot_meta = MetaFile(
                snapshot.signed.version, len(data), {"sha256": hashlib.sha256(data).hexdigest()}
            )
            edit.timestamp = True
        if edit.timestamp:
            timestamp.signed.version += 1
            timestamp.signed.expires = now + EXPIRY["timestamp"]
            timestamp.signatures.clear()
            timestamp.sign(self.keys.signer("timestamp"))
            writes.append((self.metadata_dir / "timestamp.json", _bytes(timestamp)))
        for path, data in writes:
            _write_atomic(path, data)
        logger.info("release repository: wrote %s", ", ".join(p.name for p, _ in writes))
        return [p for p, _ in writes]

    def _verify_root(self, root_md: Any) -> None:
        """A new root must verify under the previous one and under itself, or devices would refuse it."""
        previous = self.root() if self.exists() else None
        try:
            if previous is not None:
                previous.signed.verify_delegate("root", root_md.signed_bytes, root_md.signatures)
            root_md.signed.verify_delegate("root", root_md.signed_bytes, root_md.signatures)
        except Exception as e:  # tuf raises UnsignedMetadataError; say it in our words
            raise ReleaseError(
                f"the new root v{root_md.signed.version} does not verify ({e}); nothing was written. "
                "Both offline root keys must be present: restore them from their backup"
            ) from e

    def guardrail_keys(self) -> dict[str, Any]:
        """The guardrail public keys the repository signs for devices (key id -> key dict)."""
        targets = self.targets("targets")
        info = targets.signed.targets.get(GUARDRAIL_KEYS_TARGET)
        return json.loads(self.target_bytes(GUARDRAIL_KEYS_TARGET, info))["keys"] if info else {}

    def pointer(self, fleet: str) -> ReleasePointer | None:
        """What ``fleet`` runs now (None: nothing published to it yet)."""
        md = self.targets(fleet_role(fleet))
        info = md.signed.targets.get(release_pointer_path(fleet))
        if info is None:
            return None
        return ReleasePointer.model_validate_json(self.target_bytes(info.path, info))

    def publish(
        self, fleet: str, files: dict[str, bytes], custom: dict[str, Any], pointer: ReleasePointer
    ) -> list[Path] | None:
        """Sign ``files`` (target path -> content) and the fleet's new ``pointer`` into the fleet's role.

        Returns:
            The files written, in order; None when the fleet runs this release already.
        """
        with self.lock():
            self._require()
            role = fleet_role(fleet)
            md = self.targets(role)
            current = self.pointer(fleet)
            if current is not None and current.routes_like(pointer):
                return None
            edit = _Edit(roles={role: md})
            for path, data in files.items():
                self._add_target(md.signed, path, data, custom)
                edit.files.append((path, data))
            body = pointer.model_dump_json(indent=1).encode()
            path = release_pointer_path(fleet)
            self._add_target(md.signed, path, body, {"kind": "release-pointer", **custom})
            edit.files.append((path, body))
            return self._commit(edit)

    def sign(self, fleet: str, files: dict[str, bytes], custom: dict[str, Any]) -> list[Path] | None:
        """Sign ``files`` (target path -> content) into the fleet's role as its next version; the
        release pointer stays as it is. None when every file is signed with this content already."""
        with self.lock():
            self._require()
            role = fleet_role(fleet)
            md = self.targets(role)
            edit = _Edit(roles={role: md})
            for path, data in files.items():
                info = md.signed.targets.get(path)
                if info is not None and info.hashes.get("sha256") == hashlib.sha256(data).hexdigest():
                    continue
                self._add_target(md.signed, path, data, custom)
                edit.files.append((path, data))
            return self._commit(edit) if edit.files else None

    def campaigns(self, fleet: str) -> Campaigns | None:
        """The fleet's signed collection campaigns (None: none were ever signed)."""
        md = self.targets(fleet_role(fleet))
        info = md.signed.targets.get(campaigns_path(fleet))
        if info is None:
            return None
        return Campaigns.model_validate_json(self.target_bytes(info.path, info))

    # -- rotation and renewal ---------------------------------------------------------
    def rotate(self, role: str) -> list[str]:
        """A new key for ``role``; the old one is no longer trusted. Returns what was done."""
        with self.lock():
            self._require()
            if role == "root":
                return self._rotate_root()
            if role in ("targets", "snapshot", "timestamp"):
                return self._rotate_top(role)
            if role in {fleet_role(f.name) for f in self.fleets.fleet}:
                return self._rotate_fleet(role)
            known = ", ".join([*TOP_ROLES, *(fleet_role(f.name) for f in self.fleets.fleet)])
            raise ReleaseError(f"no role {role!r} to rotate; the roles are: {known}")

    def _rotate_root(self) -> list[str]:
        # the old keys sign too: a device trusting the old root accepts the new one only so
        old_signers = [self.keys.signer(k) for k in ROOT_KEYS]
        old_ids = [self.keys.entry(k).keyid for k in ROOT_KEYS]
        root = self.root().signed
        for keyid in old_ids:
            root.revoke_key(keyid, "root")
        for k in ROOT_KEYS:
            root.add_key(self.keys.generate(k, replace=True).public_key(), "root")
        new_signers = [self.keys.signer(k) for k in ROOT_KEYS]
        self._commit(_Edit(root=root, root_signers=old_signers + new_signers))
        return [
            f"root v{root.version}: new offline keys {', '.join(self.keys.entry(k).keyid[:12] for k in ROOT_KEYS)} "
            f"(threshold {ROOT_THRESHOLD}), signed by the old and the new keys; the old keys "
            f"{', '.join(i[:12] for i in old_ids)} are no longer trusted"
        ]

    def _rotate_top(self, role: str) -> list[str]:
        # The offline root keys are loaded before the new key exists: without them the
        # rotation stops here, with the key store and the repository unchanged.
        root_signers = [self.keys.signer(k) for k in ROOT_KEYS]
        old = self.keys.entry(role).keyid
        root = self.root().signed
        root.revoke_key(old, role)
        new = self.keys.generate(role, replace=True)
        root.add_key(new.public_key(), role)
        edit = _Edit(root=root, root_signers=root_signers, snapshot=True, timestamp=True)
        if role == "targets":
            edit.roles["targets"] = self.targets("targets")
        self._commit(edit)
        return [
            f"{role}: new key {new.keyid[:12]} in root v{root.version}; the old key {old[:12]} is no longer trusted"
        ]

    def _rotate_fleet(self, role: str) -> list[str]:
        old = self.keys.entry(role).keyid
        targets = self.targets("targets")
        targets.signed.revoke_key(old, role)
        new = self.keys.generate(role, replace=True)
        targets.signed.add_key(new.public_key(), role)
        self._commit(_Edit(roles={"targets": targets, role: self.targets(role)}))
        return [f"{role}: new key {new.keyid[:12]} delegated by targets; the old key {old[:12]} is no longer trusted"]

    def due(self) -> list[RoleState]:
        """Roles whose signatures expire within their renewal window."""
        now = self.clock()
        return [r for r in self.roles() if r.expires - now <= RENEW_WITHIN[_period(r.name)]]

    def refresh(self, with_root: bool = False) -> list[str]:
        """Re-sign every role near its expiry (timestamp daily, snapshot weekly, ...). Idempotent.

        The root is renewed only ``with_root``: its keys are offline, and the scheduled renewal
        of the online roles must never wait for them (nor fail without them).

        Returns:
            What was renewed, one line each (empty: nothing was due).
        """
        with self.lock():
            self._require()
            due = {r.name for r in self.due()} - (set() if with_root else {"root"})
            if not due:
                return []
            edit = _Edit(snapshot="snapshot" in due, timestamp="timestamp" in due)
            if "root" in due:
                edit.root = self.root().signed
            for name in due - set(TOP_ROLES) | ({"targets"} & due):
                edit.roles[name] = self.targets(name)
            self._commit(edit)
            now = self.clock()
            return [
                f"{r.name}: v{r.version}, expires {r.expires:%Y-%m-%d %H:%M} UTC (in {_human(r.expires - now)})"
                for r in self.roles()
                if r.name in due or (r.name in ("snapshot", "timestamp") and edit.roles)
            ]


def _fresh(kind: Any) -> Any:
    """Metadata of a role about to be published for the first time: _commit makes it version 1."""
    from tuf.api.metadata import Metadata

    md = Metadata(kind())
    md.signed.version = 0
    return md


def _hashed(path: str, sha256: str) -> str:
    """Where a target is stored: ``<dir>/<sha256>.<name>`` (ngclient's consistent-snapshot URL)."""
    dirname, sep, name = path.rpartition("/")
    return f"{dirname}{sep}{sha256}.{name}"


def _bytes(md: Any) -> bytes:
    from tuf.api.serialization.json import JSONSerializer

    return md.to_bytes(JSONSerializer(compact=True))


def _write_atomic(path: Path, data: bytes) -> None:
    """Write then rename, so a reader sees the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # public files: the server's worker reads them
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _human(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.0f} h" if hours < 48 else f"{hours / 24:.0f} d"
