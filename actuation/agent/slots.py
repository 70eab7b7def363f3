"""A/B model slots on disk, switched by one atomic state file (Mender's commit-or-revert).

:meth:`Slots.install` writes a verified release into the slot that is *not* active
(``slots/<x>/model.onnx``, ``manifest.json``, ``release.json``, each fsynced), loads it and
runs its self-test there, and only then commits: ``state.json`` is rewritten to name the new
slot (write a temporary file, fsync, rename, fsync the directory). A crash before the rename
leaves the old state, so the old slot stays active and the next cycle installs again; after
it, the new. The previous active slot is kept as it was: the last known good.

:meth:`Slots.active` reloads the active slot and checks its model file's sha256 against the
state before it runs anything; a slot damaged on disk is dropped and the other one, the last
known good, becomes active.

:meth:`Slots.revert` is Mender's revert: when the release to actuate is the one the inactive
slot holds (a rollout rolled back, or the device left the cohort), it checks that slot's model
file against the state's sha256, loads it and commits the switch; nothing is downloaded.

:meth:`Slots.install_shadow` puts a verified rollout candidate in a third directory,
``slots/shadow/``, and self-tests it there: it runs beside the active model, never acted on,
and is not in ``state.json``, so nothing makes it active but an install into an A/B slot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from actuation.agent.device import DeviceDir, fsync_dir, write_atomic
from actuation.agent.errors import UpdateRefusedError
from actuation.agent.runner import ModelRunner, SelfTest
from actuation.agent.updater import VerifiedRelease
from actuation.contract import Release
from fieldloop.registry import EdgeManifest

logger = logging.getLogger(__name__)

SLOTS = ("a", "b")
SHADOW_SLOT = "shadow"
MODEL = "model.onnx"
MANIFEST = "manifest.json"
RELEASE = "release.json"


class SlotInfo(BaseModel):
    """What a slot holds: the release, its model file's digest, when it passed its self-test."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    release: Release
    sha256: str
    self_test_max_abs_diff: float
    installed_at: datetime


class SlotState(BaseModel):
    """``state.json``: the active slot, what each slot holds, and releases refused for good."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    active: str | None = None
    slots: dict[str, SlotInfo] = Field(default_factory=dict)
    refused: dict[str, str] = Field(
        default_factory=dict, description="<model>@<version>#<digest of the release> -> why; not downloaded again"
    )

    @property
    def current(self) -> SlotInfo | None:
        return self.slots.get(self.active) if self.active else None

    @property
    def inactive(self) -> str:
        return "b" if self.active == "a" else "a"


@dataclass(frozen=True)
class ActiveModel:
    """The active slot, loaded: what the runtime runs."""

    slot: str
    info: SlotInfo
    runner: ModelRunner

    @property
    def release(self) -> Release:
        return self.info.release


def release_key(release: Release) -> str:
    """A release as published: a republished one (a new attestation, other limits) is another key."""
    digest = hashlib.sha256(release.model_dump_json().encode()).hexdigest()[:16]
    return f"{release.model}@{release.version}#{digest}"


class Slots:
    """The device's two slots and their state file (see the module docstring)."""

    def __init__(self, device: DeviceDir, pause: Callable[[str], None] | None = None) -> None:
        self.device = device
        self._pause = pause or (lambda step: None)

    def state(self) -> SlotState:
        path = self.device.state
        if not path.exists():
            return SlotState()
        try:
            return SlotState.model_validate_json(path.read_text())
        except ValueError as e:
            # the file is only ever replaced by rename, so this is damage, not a torn write
            logger.error("state file %s is damaged (%s): starting with no active model", path, e)
            return SlotState()

    def _commit(self, state: SlotState) -> None:
        tmp = self.device.state.with_name(self.device.state.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(state.model_dump_json(indent=2).encode())
            f.flush()
            os.fsync(f.fileno())
        self._pause("activation")
        os.replace(tmp, self.device.state)
        fsync_dir(self.device.path)

    def refuse(self, release: Release, why: str) -> None:
        """Remember a refused release, so it is not downloaded again until the pointer moves."""
        state = self.state()
        self._commit(state.model_copy(update={"refused": {**state.refused, release_key(release): why}}))

    def refused(self, release: Release) -> str | None:
        return self.state().refused.get(release_key(release))

    def install(self, verified: VerifiedRelease) -> ActiveModel:
        """Write, load and self-test ``verified`` in the inactive slot, then make it the active one.

        Raises:
            UpdateRefusedError: the self-test failed (reason ``self-test``); the active slot stays.
        """
        state = self.state()
        slot = state.inactive
        directory = self.device.slots / slot
        shutil.rmtree(directory, ignore_errors=True)  # a half-written earlier attempt, or the older release
        directory.mkdir(parents=True)
        release = verified.release
        runner, result = _write_and_test(verified, directory)
        info = SlotInfo(
            release=release,
            sha256=release.model_file.sha256,
            self_test_max_abs_diff=result.max_abs_diff,
            installed_at=datetime.now(UTC),
        )
        self._commit(state.model_copy(update={"active": slot, "slots": {**state.slots, slot: info}}))
        logger.info("activated %s in slot %s (self-test max |Δ| %.2e)", verified.label, slot, result.max_abs_diff)
        return ActiveModel(slot, info, runner)

    def revert(self, release: Release) -> ActiveModel | None:
        """Make the inactive slot active if it holds ``release`` and its model file is intact;
        None (nothing changed) when it holds another release or is damaged (then install again)."""
        state = self.state()
        slot = state.inactive
        info = state.slots.get(slot)
        if info is None or info.release != release:
            return None
        try:
            model = self._load(slot, info)
        except (OSError, ValueError, UpdateRefusedError) as e:
            logger.error("slot %s (%s@%s) is damaged, installing it again: %s", slot, release.model,
                         release.version, e)  # fmt: skip
            return None
        self._commit(state.model_copy(update={"active": slot}))
        logger.info("returned to %s@%s in slot %s (kept on disk)", release.model, release.version, slot)
        return model

    def install_shadow(self, verified: VerifiedRelease) -> ShadowModel:
        """Write, load and self-test ``verified`` in ``slots/shadow/`` (never in the A/B state).

        Raises:
            UpdateRefusedError: the self-test failed (reason ``self-test``); no shadow runs.
        """
        directory = self.device.slots / SHADOW_SLOT
        self.drop_shadow()
        directory.mkdir(parents=True)
        try:
            runner, result = _write_and_test(verified, directory)
        except UpdateRefusedError:
            self.drop_shadow()
            raise
        logger.info("shadowing %s (self-test max |Δ| %.2e)", verified.label, result.max_abs_diff)
        return ShadowModel(verified.release, runner, result.max_abs_diff)

    def drop_shadow(self) -> None:
        shutil.rmtree(self.device.slots / SHADOW_SLOT, ignore_errors=True)

    def active(self) -> ActiveModel | None:
        """The active slot loaded and checked; if its files are damaged, the other slot (the last
        known good) is made active instead; None when neither holds a good model."""
        state = self.state()
        if state.active is None:
            return None
        for slot in (state.active, state.inactive):
            info = state.slots.get(slot)
            if info is None:
                continue
            try:
                model = self._load(slot, info)
            except (OSError, ValueError, UpdateRefusedError) as e:
                logger.error("slot %s (%s@%s) is damaged: %s", slot, info.release.model, info.release.version, e)
                continue
            if slot != state.active:
                # the damaged slot is dropped, so the next update reinstalls into it, not over this one
                slots = {slot: info}
                self._commit(state.model_copy(update={"active": slot, "slots": slots}))
                logger.warning("serving the last known good %s@%s from slot %s", info.release.model,
                               info.release.version, slot)  # fmt: skip
            return model
        return None

    def _load(self, slot: str, info: SlotInfo) -> ActiveModel:
        directory = self.device.slots / slot
        if _sha256(directory / MODEL) != info.sha256:
            raise ValueError("the model file's sha256 is not the one installed")
        manifest = EdgeManifest.from_json((directory / MANIFEST).read_text())
        return ActiveModel(slot, info, ModelRunner(directory / MODEL, manifest))


@dataclass(frozen=True)
class ShadowModel:
    """A rollout candidate loaded in ``slots/shadow/``: run beside the active model, never acted on."""

    release: Release
    runner: ModelRunner
    self_test_max_abs_diff: float

    @property
    def label(self) -> str:
        return f"{self.release.model}@{self.release.version}"


def _write_and_test(verified: VerifiedRelease, directory: Path) -> tuple[ModelRunner, SelfTest]:
    """Write ``verified``'s files durably into ``directory``, load the model and self-test it there."""
    _copy_durable(verified.model_file, directory / MODEL)
    _copy_durable(verified.manifest_file, directory / MANIFEST)
    write_atomic(directory / RELEASE, verified.release.model_dump_json(indent=2).encode())
    fsync_dir(directory)
    runner = ModelRunner(directory / MODEL, verified.manifest)
    result = runner.self_test()
    if not result.passed:
        raise UpdateRefusedError("self-test", _self_test_failed(verified.label, result))
    return runner, result


def _self_test_failed(label: str, result: SelfTest) -> str:
    return (
        f"{label} failed its self-test on this device: max |output - expected| = {result.max_abs_diff:.3g}, "
        f"tolerance {result.tolerance:g}; the active model stays. Rebuild the edge files or check the device's runtime"
    )


def _copy_durable(source: Path, dest: Path) -> None:
    with open(source, "rb") as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst)
        dst.flush()
        os.fsync(dst.fileno())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def state_summary(state: SlotState) -> dict[str, object]:
    """The state as plain data, for status output."""
    return json.loads(state.model_dump_json())
