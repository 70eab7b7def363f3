"""A device's directory: what it was provisioned with and where it keeps its state.

``fieldloop agent provision`` writes it once (:func:`provision`); every later run reads it
(:meth:`DeviceDir.open`). Default ``$FIELDLOOP_HOME/devices/<id>/``::

    root.json        the trusted TUF root (from `fieldloop release root`), the update channel's anchor
    device.json      DeviceConfig: id, fleet, tenant, repository URL, task, rate
    metadata/        python-tuf's metadata cache (the newest verified timestamp, snapshot, targets)
    downloads/       targets being fetched; nothing here is ever loaded
    slots/a, slots/b the two model slots (A/B); ``state.json`` names the active one
    slots/shadow     a rollout's candidate run beside the active model, never acted on (not in state.json)
    state.json       which slot is active, what each holds, refused versions (atomic: old or new)
    status.json      the last cycle's and window's figures, for `fieldloop agent status`
    hardcases.jsonl  the inputs worth learning from (largest shadow disagreement, interventions), bounded
    agent.lock       held by the running agent (one per device)
    spool/           the edge SDK's telemetry spool
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from actuation.agent.errors import DeviceError
from actuation.contract import check_fleet_name

DEVICE_FILE = "device.json"
ROOT_FILE = "root.json"


class DeviceConfig(BaseModel):
    """What a device was provisioned as (``device.json``); unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device_id: str = Field(description="the device's id, its telemetry's key (1-128 printable, no spaces)")
    fleet: str = Field(description="the fleet whose release pointer it follows")
    tenant: str | None = Field(default=None, description="the owner; None: a device that runs base models only")
    repo_url: str = Field(description="the release repository's base URL (metadata/ and targets/ under it)")
    task: str = Field(description="the model task it runs (fieldloop.datasets layout of its inputs)")
    rate_hz: float = Field(default=5.0, gt=0, le=1000, description="inference rate (frames per second)")

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, value: str) -> str:
        if not 0 < len(value) <= 128 or not value.isprintable() or any(c.isspace() for c in value) or "/" in value:
            raise ValueError("device id: 1-128 printable characters without spaces or '/'")
        return value

    @field_validator("fleet")
    @classmethod
    def _fleet(cls, value: str) -> str:
        return check_fleet_name(value)

    @field_validator("repo_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"repository URL {value!r}: use http(s)://host:port (as `fieldloop release root` says)")
        return value.rstrip("/")


@dataclass(frozen=True)
class DeviceDir:
    """The paths of one device's directory (see the module docstring)."""

    path: Path

    @property
    def root(self) -> Path:
        return self.path / ROOT_FILE

    @property
    def config_file(self) -> Path:
        return self.path / DEVICE_FILE

    @property
    def metadata(self) -> Path:
        return self.path / "metadata"

    @property
    def downloads(self) -> Path:
        return self.path / "downloads"

    @property
    def slots(self) -> Path:
        return self.path / "slots"

    @property
    def state(self) -> Path:
        return self.path / "state.json"

    @property
    def status(self) -> Path:
        return self.path / "status.json"

    @property
    def hardcases(self) -> Path:
        return self.path / "hardcases.jsonl"

    @property
    def campaign_budget(self) -> Path:
        """What each collection campaign's budget has spent on this device (survives a restart)."""
        return self.path / "campaign-budget.json"

    @property
    def spool(self) -> Path:
        return self.path / "spool"

    def config(self) -> DeviceConfig:
        """The device's config; :class:`DeviceError` saying how to provision it if there is none."""
        if not self.config_file.exists() or not self.root.exists():
            raise DeviceError(
                f"{self.path} is not a provisioned device (no {DEVICE_FILE} or {ROOT_FILE}); run "
                "`fieldloop agent provision --device ID --fleet F --root root.json` first"
            )
        try:
            return DeviceConfig.model_validate_json(self.config_file.read_text())
        except ValueError as e:
            raise DeviceError(f"{self.config_file} is invalid ({e}); provision the device again") from e

    def trusted_root(self) -> bytes:
        return self.root.read_bytes()

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Held while an agent runs the device: two agents would race on its slots and state."""
        import fcntl

        path = self.path / "agent.lock"
        with open(path, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "unknown"
                raise DeviceError(
                    f"another agent runs the device in {self.path} (pid {holder}); stop it before starting another"
                ) from None
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            yield


def provision(path: Path, config: DeviceConfig, root: bytes, *, replace: bool = False) -> DeviceDir:
    """Write a device directory: the trusted root, the config and the empty state directories.

    Raises:
        DeviceError: the root is not TUF root metadata, or the directory already holds a
            device provisioned otherwise (without ``replace``).
    """
    _check_root(root)
    device = DeviceDir(path)
    if device.config_file.exists() and not replace:
        current = DeviceConfig.model_validate_json(device.config_file.read_text())
        if current != config or device.trusted_root() != root:
            raise DeviceError(
                f"{path} is already provisioned as {current.device_id} in fleet {current.fleet}; "
                "pass --replace to provision it again (its slots and metadata cache are kept)"
            )
    for directory in (device.metadata, device.downloads, device.slots / "a", device.slots / "b", device.spool):
        directory.mkdir(parents=True, exist_ok=True)
    write_atomic(device.root, root)
    write_atomic(device.config_file, config.model_dump_json(indent=2).encode())
    return device


def _check_root(root: bytes) -> None:
    try:
        signed = json.loads(root)["signed"]
        ok = signed["_type"] == "root"
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise DeviceError("the trusted root is not TUF root metadata; get it with `fieldloop release root > root.json`")


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a crash leaves either the old file or the new, never a mix."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (the directory entry itself)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
