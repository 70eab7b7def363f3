"""The update channel: one TUF refresh per cycle, then the release pointer and, when it names a
release the device does not have, that release's files, each verified before anything reads it.

:meth:`ReleaseChannel.check` is one cycle's look at the repository:

1. a new ``tuf.ngclient.Updater`` (python-tuf 7: one ``refresh()`` per Updater) bootstrapped
   with the provisioned root, its metadata cache in ``metadata/`` (so a rollback to older
   metadata is refused against what the device saw last);
2. the fleet's :class:`~actuation.contract.ReleasePointer`, a target signed by the fleet's
   delegated role.

:meth:`ReleaseChannel.fetch` downloads one release the pointer names (the fleet's ``active``
release or its rollout stage's candidate, to actuate or to run in shadow): its model,
manifest and attestation (TUF checks each one's length and sha256 against the signed
metadata) and the guardrail keys (a target of the top-level role), then :func:`verify_release`
decides with what it verified: the attestation's signature and subjects, its verdict, the
fleet and the tenant, the manifest. A candidate gets exactly the checks a champion gets.
Nothing here loads a model: that is the slots' job, after this.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from actuation.agent.device import DeviceConfig, DeviceDir
from actuation.agent.errors import OfflineError, UpdateRefusedError
from actuation.attestation import verify_pass
from actuation.contract import (
    EDGE_VARIANT,
    GUARDRAIL_KEYS_TARGET,
    MANIFEST_FILE,
    Campaigns,
    Release,
    ReleasePointer,
    Verdict,
    campaigns_path,
    release_pointer_path,
)
from actuation.errors import AttestationError
from fieldloop.registry import EdgeManifest

logger = logging.getLogger(__name__)

MODEL_FILE = "student.int8.onnx"  # the subject name of the model file in the attestation

# Metadata of this repository is a few KiB (one delegated role per fleet, three files per
# release); these bounds stop an endless-data attack long before a device's disk or memory.
MAX_ROOT_BYTES = 64 * 1024
MAX_TIMESTAMP_BYTES = 16 * 1024
MAX_SNAPSHOT_BYTES = 256 * 1024
MAX_TARGETS_BYTES = 1024 * 1024


@dataclass(frozen=True)
class VerifiedRelease:
    """A release whose every file passed TUF's and the attestation's checks (in ``downloads/``):
    ``release`` is the one verified, the pointer's ``active`` or its stage's ``candidate``."""

    pointer: ReleasePointer
    release: Release
    model_file: Path
    manifest_file: Path
    manifest: EdgeManifest
    verdict: Verdict

    @property
    def label(self) -> str:
        return f"{self.release.model}@{self.release.version}"


def updater_config() -> Any:
    from tuf.ngclient import UpdaterConfig

    return UpdaterConfig(
        root_max_length=MAX_ROOT_BYTES,
        timestamp_max_length=MAX_TIMESTAMP_BYTES,
        snapshot_max_length=MAX_SNAPSHOT_BYTES,
        targets_max_length=MAX_TARGETS_BYTES,
        app_user_agent="fieldloop-agent/1",
    )


SOCKET_TIMEOUT_S = 10  # a repository that stalls longer is offline for this cycle


def http_fetcher() -> Any:
    """python-tuf's urllib3 fetcher, made once per agent so its connections are kept between cycles."""
    from tuf.ngclient.urllib3_fetcher import Urllib3Fetcher

    return Urllib3Fetcher(socket_timeout=SOCKET_TIMEOUT_S, app_user_agent="fieldloop-agent/1")


class ReleaseChannel:
    """One device's view of the release repository (see the module docstring).

    Args:
        device: the device's directory (trusted root, metadata cache, downloads).
        config: what the device was provisioned as.
        fetcher: a ``tuf.ngclient.FetcherInterface``; default python-tuf's urllib3 fetcher.
        pause: called with a step's name at the points a crash test stops the agent.
    """

    def __init__(
        self,
        device: DeviceDir,
        config: DeviceConfig,
        fetcher: Any = None,
        pause: Callable[[str], None] | None = None,
    ) -> None:
        self.device, self.config, self.fetcher = device, config, fetcher
        self._pause = pause or (lambda step: None)
        self._updater: Any = None

    # -- one cycle -------------------------------------------------------------------
    def check(self) -> ReleasePointer | None:
        """Refresh the metadata (a new Updater) and read the fleet's release pointer (None: the
        repository signs none for this fleet yet)."""
        from tuf.ngclient import Updater

        self.device.metadata.mkdir(parents=True, exist_ok=True)
        with _tuf_errors("metadata"):
            self._updater = Updater(
                str(self.device.metadata),
                f"{self.config.repo_url}/metadata/",
                str(self.device.downloads),
                f"{self.config.repo_url}/targets/",
                fetcher=self.fetcher,
                config=updater_config(),
                bootstrap=self.device.trusted_root(),
            )
            self._updater.refresh()
        with _tuf_errors("metadata"):
            if self._updater.get_targetinfo(release_pointer_path(self.config.fleet)) is None:
                return None
        data = self._download(release_pointer_path(self.config.fleet))
        try:
            pointer = ReleasePointer.model_validate_json(data)
        except ValueError as e:
            raise UpdateRefusedError("pointer", f"the fleet's release pointer is not a valid pointer: {e}") from e
        if pointer.fleet != self.config.fleet:
            raise UpdateRefusedError(
                "pointer",
                f"the release pointer of fleet {self.config.fleet} names fleet {pointer.fleet}: "
                "the repository is misconfigured; tell its operator",
            )
        return pointer

    def campaigns(self) -> Campaigns | None:
        """The fleet's collection campaigns, signed by its role like the pointer (None: the role
        signs no list), after :meth:`check`.

        Raises:
            UpdateRefusedError: the target fails TUF's checks, or is not a campaigns list.
        """
        path = campaigns_path(self.config.fleet)
        with _tuf_errors("metadata"):
            if self._updater.get_targetinfo(path) is None:
                return None
        data = self._download(path)
        try:
            return Campaigns.model_validate_json(data)
        except ValueError as e:
            raise UpdateRefusedError("campaigns", f"the fleet's campaigns target is not a campaigns list: {e}") from e

    def fetch(self, pointer: ReleasePointer, release: Release | None = None) -> VerifiedRelease:
        """Download and verify the files of ``release`` (default: the one this device actuates,
        :meth:`~actuation.contract.ReleasePointer.release_for`), after :meth:`check`.

        Raises:
            UpdateRefusedError: ``release`` is not one the pointer names (reason ``pointer``), or
                a check of :func:`verify_release` failed.
        """
        release = release or pointer.release_for(self.config.device_id)
        if release not in _named(pointer):
            raise UpdateRefusedError(
                "pointer", f"{release.model}@{release.version} is not a release the fleet's pointer names"
            )
        model_file = self._download_file(release.model_file.path, "download")
        manifest_file = self._download_file(release.manifest.path)
        attestation = self._download(release.attestation.path)
        keys = self._guardrail_keys()
        return verify_release(pointer, self.config, model_file, manifest_file, attestation, keys, release)

    # -- downloads -------------------------------------------------------------------
    def _targetinfo(self, path: str) -> Any:
        with _tuf_errors("metadata"):
            info = self._updater.get_targetinfo(path)
        if info is None:
            raise UpdateRefusedError(
                "pointer", f"the repository signs no target {path}; the release is incomplete: tell its operator"
            )
        return info

    def _download(self, path: str) -> bytes:
        return Path(self._download_file(path)).read_bytes()

    def _download_file(self, path: str, pause_at: str | None = None) -> Path:
        """The verified local copy of target ``path``: reused if a complete one is there, else
        fetched into a ``.part`` file that only a verified download renames into place (a
        crash mid-download leaves a ``.part`` that is never read and is fetched again)."""
        info = self._targetinfo(path)
        cached = self._updater.find_cached_target(info)
        if cached:
            return Path(cached)
        final = self.device.downloads / quote(info.path, "")  # the Updater's own naming
        part = final.with_name(final.name + ".part")
        with _tuf_errors("target"):
            self._updater.download_target(info, str(part))
        if pause_at:
            self._pause(pause_at)
        with open(part, "rb") as f:
            os.fsync(f.fileno())
        os.replace(part, final)
        return final

    def _guardrail_keys(self) -> list[Any]:
        from securesystemslib.signer import SSlibKey

        data = self._download(GUARDRAIL_KEYS_TARGET)
        try:
            keys = json.loads(data)["keys"]
            return [SSlibKey.from_dict(keyid, dict(key)) for keyid, key in keys.items()]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise UpdateRefusedError(
                "attestation", f"the guardrail keys target {GUARDRAIL_KEYS_TARGET} is not a key list: {e}"
            ) from e


def verify_release(
    pointer: ReleasePointer,
    config: DeviceConfig,
    model_file: Path,
    manifest_file: Path,
    attestation: bytes,
    keys: list[Any],
    release: Release | None = None,
) -> VerifiedRelease:
    """Decide whether this device may run ``release`` (default: the one it actuates), with what was
    verified; refuse naming why. The digests are checked against ``release`` as the signed
    pointer names it, so a candidate is held to its own files, not the champion's."""
    release = release or pointer.release_for(config.device_id)
    subjects = {MODEL_FILE: _sha256(model_file), MANIFEST_FILE: _sha256(manifest_file)}
    if (subjects[MODEL_FILE], subjects[MANIFEST_FILE]) != (release.model_file.sha256, release.manifest.sha256):
        raise UpdateRefusedError(
            "pointer",
            f"the release pointer's digests for {release.model}@{release.version} are not those of the files the "
            "repository signs under its paths: the repository is inconsistent; tell its operator",
        )
    try:
        verdict = verify_pass(attestation, keys, subjects)
    except AttestationError as e:
        raise UpdateRefusedError("attestation", f"{release.model}@{release.version}: {e}") from e
    if (verdict.model, verdict.version) != (release.model, release.version):
        raise UpdateRefusedError(
            "verdict",
            f"the pointer names {release.model}@{release.version} but its attestation judged "
            f"{verdict.model}@{verdict.version}: mixed-up release; tell the repository's operator",
        )
    if config.fleet not in verdict.fleets:
        raise UpdateRefusedError(
            "verdict",
            f"{release.model}@{release.version} was judged for fleets {verdict.fleets}, not for "
            f"{config.fleet}: publish it after a guardrail run for this fleet",
        )
    _check_tenant(release.model, verdict.tenant, release.tenant, config)
    try:
        manifest = EdgeManifest.from_json(manifest_file.read_text())
    except ValueError as e:
        raise UpdateRefusedError(
            "manifest", f"the manifest of {release.model}@{release.version} is invalid: {e}"
        ) from e
    build = manifest.builds.get(EDGE_VARIANT)
    if build is None or build.sha256 != subjects[MODEL_FILE]:
        raise UpdateRefusedError(
            "manifest",
            f"the manifest's {EDGE_VARIANT} build is not the model file this release ships "
            f"({build.sha256[:12] if build else 'no build'} vs {subjects[MODEL_FILE][:12]})",
        )
    if manifest.model != release.model or manifest.task != config.task:
        raise UpdateRefusedError(
            "manifest",
            f"the manifest describes {manifest.model} ({manifest.task}); this device runs {config.task} "
            f"and the pointer names {release.model}",
        )
    limited = [o.name for o in release.limits.outputs] + (
        [release.limits.ood_output] if release.limits.ood_output else []
    )
    if missing := [name for name in limited if name not in manifest.outputs]:
        raise UpdateRefusedError(
            "manifest",
            f"the release's runtime limits name outputs {missing} the model does not have ({manifest.outputs}): "
            "the safety monitor could not guard it; publish it with its task's limits",
        )
    return VerifiedRelease(pointer, release, model_file, manifest_file, manifest, verdict)


def _named(pointer: ReleasePointer) -> list[Release]:
    """The releases a pointer names: its ``active`` one and its stage's candidate, if any."""
    return [pointer.active] + ([pointer.stage.candidate] if pointer.stage else [])


def _check_tenant(model: str, judged: str | None, published: str | None, config: DeviceConfig) -> None:
    """A tenant's model runs only on that tenant's devices; a base model on any."""
    for tenant in {judged, published} - {None}:
        if tenant != config.tenant:
            owner = f"tenant {config.tenant}" if config.tenant else "no tenant (base models only)"
            raise UpdateRefusedError(
                "tenant",
                f"{model} is tenant {tenant}'s model and this device belongs to {owner}: refused; "
                f"the fleet {config.fleet}'s pointer must name a base model or one of its own tenant's",
            )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextmanager
def _tuf_errors(reason: str) -> Iterator[None]:
    """python-tuf's errors as the agent's: a failed check refuses, no verified view is offline."""
    from tuf.api import exceptions as tuf

    try:
        yield
    except tuf.ExpiredMetadataError as e:
        raise OfflineError(
            f"the repository's metadata has expired ({e}): keeping the active model until the "
            "repository publishes fresh metadata (or the device's clock is wrong)"
        ) from e
    except tuf.RepositoryError as e:
        refused = "target" if isinstance(e, tuf.LengthOrHashMismatchError) and reason == "target" else "metadata"
        raise UpdateRefusedError(refused, f"the repository's {refused} failed TUF verification: {e}") from e
    except tuf.DownloadLengthMismatchError as e:
        raise UpdateRefusedError(reason, f"the repository sent more than the signed length: {e}") from e
    except tuf.DownloadError as e:
        cause = str(e) or str(e.__cause__ or e.__context__ or type(e).__name__)
        raise OfflineError(
            f"the release repository is unreachable ({cause}); keeping the active model, "
            "the next update cycle tries again"
        ) from e
