"""The release side's signing keys: where they live, how a signer for one is made, rotation.

Each role has its own Ed25519 key: TUF's ``root``, ``targets``, ``snapshot`` and
``timestamp``, one per fleet (``fleet-<name>``) and ``guardrail`` for the attestations.
A :class:`KeyStore` keeps, under ``$FIELDLOOP_HOME/keys/signing/``:

* ``<role>.pem``: the private key (PKCS#8 PEM, mode 0600, in a 0700 directory);
* ``keys.json``: per role, the signer's URI and the public key (securesystemslib's dict).

A signer is made with securesystemslib's ``Signer.from_priv_key_uri(uri, public_key)``, so
the production path, a KMS or HSM key, is a different URI in ``keys.json``
(``awskms:``, ``gcpkms:``, ``hsm:``) and no code change: :meth:`KeyStore.adopt` records one.
:func:`attest` signs a guardrail attestation (verified by :mod:`actuation.attestation`).
Private keys are never logged, printed, or written anywhere but their ``.pem``; errors
name a key by role and key id only.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actuation.contract import PAYLOAD_TYPE, PREDICATE_TYPE, Verdict
from actuation.errors import AttestationError, SigningKeyError

logger = logging.getLogger(__name__)

SIGNING_DIR = "keys/signing"  # under FIELDLOOP_HOME
INDEX = "keys.json"
GUARDRAIL = "guardrail"
TUF_ROLES = ("root", "targets", "snapshot", "timestamp")


@dataclass(frozen=True)
class KeyEntry:
    role: str
    uri: str  # where the private key is: file2:<path>, or a KMS/HSM URI
    public: dict[str, Any]  # securesystemslib key dict (keytype, scheme, keyval.public)
    keyid: str

    def public_key(self) -> Any:
        from securesystemslib.signer import SSlibKey

        return SSlibKey.from_dict(self.keyid, dict(self.public))


class KeyStore:
    """The signing keys of one site, by role; see the module docstring."""

    def __init__(self, home: Path | str) -> None:
        self.dir = Path(home) / SIGNING_DIR

    # -- reading -------------------------------------------------------------------
    def _index(self) -> dict[str, dict[str, Any]]:
        path = self.dir / INDEX
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise SigningKeyError(f"the key index {path} is unreadable ({e}); restore it from your backup") from e

    def roles(self) -> list[str]:
        return sorted(self._index())

    def has(self, role: str) -> bool:
        return role in self._index()

    def entry(self, role: str) -> KeyEntry:
        index = self._index()
        if role not in index:
            raise SigningKeyError(
                f"no signing key for {role!r} in {self.dir}; create the release keys with "
                "`fieldloop release init` (or restore the key directory from your backup)"
            )
        e = index[role]
        return KeyEntry(role, e["uri"], e["public"], e["keyid"])

    def public_key(self, role: str) -> Any:
        return self.entry(role).public_key()

    def signer(self, role: str) -> Any:
        """A securesystemslib Signer for ``role``'s key (file, KMS or HSM: whatever its URI says)."""
        from securesystemslib.signer import Signer

        entry = self.entry(role)
        if entry.uri.startswith("file2:"):
            self._check_private_file(Path(entry.uri.removeprefix("file2:")), role)
        try:
            return Signer.from_priv_key_uri(entry.uri, entry.public_key())
        except Exception as e:  # securesystemslib raises many kinds; name the role, never the key
            raise SigningKeyError(f"the {role!r} signing key (id {entry.keyid[:12]}) could not be loaded: {e}") from e

    def _check_private_file(self, path: Path, role: str) -> None:
        if not path.exists():
            raise SigningKeyError(f"the {role!r} private key file {path} is missing; restore it from your backup")
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise SigningKeyError(
                f"the {role!r} private key file {path} is readable by others (mode {mode:o}); "
                f"run `chmod 600 {path}` and consider the key exposed: rotate it"
            )

    # -- writing -------------------------------------------------------------------
    def _write_index(self, index: dict[str, dict[str, Any]]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        tmp = self.dir / (INDEX + ".tmp")
        tmp.write_text(json.dumps(index, indent=2, sort_keys=True))
        tmp.replace(self.dir / INDEX)

    def generate(self, role: str, replace: bool = False) -> KeyEntry:
        """A new Ed25519 key for ``role`` in a 0600 file (the old file kept as ``<role>.<keyid>.old.pem``).

        Without ``replace``, an existing key is kept and returned (idempotent setup).
        """
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
        from securesystemslib.signer import SSlibKey

        index = self._index()
        if role in index and not replace:
            return self.entry(role)
        private = Ed25519PrivateKey.generate()
        public = SSlibKey.from_crypto(private.public_key())
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        path = self.dir / f"{role}.pem"
        if path.exists():
            old = index.get(role, {}).get("keyid", "unknown")[:12]
            path.replace(self.dir / f"{role}.{old}.old.pem")
        pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        index[role] = {"uri": f"file2:{path}", "public": public.to_dict(), "keyid": public.keyid}
        self._write_index(index)
        logger.info("signing key for %s created (key id %s)", role, public.keyid[:12])
        return self.entry(role)

    def adopt(self, role: str, uri: str, public: dict[str, Any], keyid: str) -> KeyEntry:
        """Use a key kept elsewhere (a KMS or HSM) for ``role``: only its URI and public key are stored."""
        index = self._index()
        index[role] = {"uri": uri, "public": dict(public), "keyid": keyid}
        self._write_index(index)
        return self.entry(role)


def attest(verdict: Verdict, subjects: Mapping[str, str], signer: Any) -> bytes:
    """The DSSE envelope (JSON bytes) of a statement about ``subjects`` (name -> sha256 hex)."""
    from google.protobuf import json_format
    from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
    from in_toto_attestation.v1.statement import Statement
    from securesystemslib.dsse import Envelope

    if not subjects:
        raise AttestationError("an attestation needs at least one subject (the files a device runs)")
    descriptors = [
        ResourceDescriptor(name=name, digest={"sha256": digest}).pb for name, digest in sorted(subjects.items())
    ]
    statement = Statement(descriptors, PREDICATE_TYPE, json.loads(verdict.model_dump_json()))
    statement.validate()
    payload = json.dumps(json_format.MessageToDict(statement.pb), sort_keys=True, separators=(",", ":")).encode()
    envelope = Envelope(payload, PAYLOAD_TYPE, {})
    envelope.sign(signer)
    return json.dumps(envelope.to_dict(), indent=2, sort_keys=True).encode()
