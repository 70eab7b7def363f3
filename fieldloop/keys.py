"""The site's HMAC keys: one secret key per tenant, loaded once at job start from a secret source.

Refinement keys its pseudonyms with them; the bronze job keys the digest it keeps of a
quarantined record it may not keep raw. Both stages load them here, in the kernel, so
neither imports the other.

A key ring is JSON (the same shape in every source)::

    {"keys": [{"tenant": "acme-mobility", "id": "acme-mobility-2026-11",
               "secret_b64": "<32+ random bytes, base64>", "active": true}, ...]}

Each tenant has exactly one active key, used for new rows; older keys stay in the ring
so rows pseudonymized with them remain attributable to a key id (rotation: add a new
key, mark it active, the old one inactive). Public streams use the tenant ``_public``.

Sources (``refine.key_source``): ``file:<path>`` and ``env:<VAR>`` for local runs,
``aws-secretsmanager:<secret-id>`` in production. The default local file is created with
fresh keys on first use, so ``fieldloop demo`` runs on a fresh machine; every other
source must exist. Key bytes never leave this module except into :func:`hmac.new`:
``repr`` shows ids only, errors name the key id and the source, never the key.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fieldloop.errors import KeyRingError

if TYPE_CHECKING:
    from fieldloop.config import FieldloopConfig

logger = logging.getLogger(__name__)

PUBLIC_TENANT = "_public"
MIN_KEY_BYTES = 32


@dataclass(frozen=True)
class PseudonymKey:
    """One tenant's HMAC key; the secret is hidden from ``repr``."""

    tenant: str
    id: str
    secret: bytes = field(repr=False)
    active: bool = True


class KeyRing:
    """Every tenant's pseudonym keys, as loaded from one source."""

    def __init__(self, keys: Iterable[PseudonymKey], source: str) -> None:
        self.source = source
        self._keys = list(keys)
        self._active: dict[str, PseudonymKey] = {}
        for key in self._keys:
            if len(key.secret) < MIN_KEY_BYTES:
                raise KeyRingError(
                    f"key '{key.id}' in {source} is {len(key.secret)} bytes; use at least {MIN_KEY_BYTES} random bytes"
                )
            if key.active:
                if key.tenant in self._active:
                    raise KeyRingError(
                        f"tenant '{key.tenant}' has two active keys in {source} "
                        f"({self._active[key.tenant].id}, {key.id}): "
                        'mark the older one "active": false'
                    )
                self._active[key.tenant] = key

    def __repr__(self) -> str:
        return f"KeyRing(source={self.source!r}, keys={[k.id for k in self._keys]})"

    @property
    def tenants(self) -> list[str]:
        return sorted(self._active)

    def active(self, tenant: str | None) -> PseudonymKey:
        """The key new pseudonyms of ``tenant`` (``None``: public data) are made with.

        Raises:
            KeyRingError: the tenant has no active key in the ring.
        """
        name = tenant or PUBLIC_TENANT
        try:
            return self._active[name]
        except KeyError:
            raise KeyRingError(
                f"no active pseudonym key for tenant '{name}' in {self.source}: add one "
                f'({{"tenant": "{name}", "id": "...", "secret_b64": "...", "active": true}})'
            ) from None

    @classmethod
    def parse(cls, text: str, source: str) -> KeyRing:
        """Parse the JSON shape above.

        Raises:
            KeyRingError: not JSON, or an entry lacks a field or has a bad secret.
        """
        try:
            doc = json.loads(text)
            entries = doc["keys"]
            keys = [
                PseudonymKey(
                    e["tenant"], e["id"], base64.b64decode(e["secret_b64"], validate=True), bool(e.get("active", True))
                )
                for e in entries
            ]
        except (ValueError, KeyError, TypeError) as e:
            # Never echo the text: it holds the keys.
            raise KeyRingError(
                f"the key ring in {source} is not valid ({type(e).__name__}): expected "
                '{"keys": [{"tenant", "id", "secret_b64", "active"}, ...]}'
            ) from None
        return cls(keys, source)

    @staticmethod
    def generate(tenants: Iterable[str | None], period: str) -> str:
        """A new key ring document with one fresh random key per tenant (JSON text)."""
        keys = [
            {
                "tenant": t or PUBLIC_TENANT,
                "id": f"{t or PUBLIC_TENANT}-{period}",
                "secret_b64": base64.b64encode(secrets.token_bytes(MIN_KEY_BYTES)).decode(),
                "active": True,
            }
            for t in sorted({t or PUBLIC_TENANT for t in tenants})
        ]
        return json.dumps({"keys": keys}, indent=2) + "\n"


def load_key_ring(
    source: str,
    *,
    create_for: Iterable[str | None] | None = None,
    period: str = "k1",
    env: Mapping[str, str] | None = None,
    secretsmanager: Any = None,
) -> KeyRing:
    """Load the key ring from ``source``.

    Args:
        source: ``file:<path>``, ``env:<VAR>`` or ``aws-secretsmanager:<secret-id>``.
        create_for: for a ``file:`` source that does not exist yet, create it (mode 0600)
            with a fresh key for each of these tenants. ``None``: a missing file is an error.
        period: suffix of generated key ids.
        env: the environment to read ``env:`` sources from (default ``os.environ``; the
            entry point passes it, library code does not read the environment itself).
        secretsmanager: a boto3 Secrets Manager client for ``aws-secretsmanager:`` sources.

    Raises:
        KeyRingError: the source is missing, unreadable or malformed.
    """
    kind, _, where = source.partition(":")
    if kind == "file":
        path = Path(where).expanduser()
        if not path.exists() and create_for is not None:
            _create_key_file(path, create_for, period)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise KeyRingError(
                f"cannot read the key ring {path}: {e.strerror}; set FIELDLOOP_REFINE_KEY_SOURCE "
                "to file:<path>, env:<VAR> or aws-secretsmanager:<secret-id>"
            ) from None
        if path.stat().st_mode & 0o077:
            logger.warning("key ring %s is readable by other users; chmod 600 it", path)
        return KeyRing.parse(text, source)
    if kind == "env":
        text = (env if env is not None else os.environ).get(where)
        if not text:
            raise KeyRingError(f"environment variable {where} (from key source {source}) is not set")
        return KeyRing.parse(text, source)
    if kind == "aws-secretsmanager":
        if secretsmanager is None:
            raise KeyRingError(f"{source} needs a Secrets Manager client; none was given")
        try:
            text = secretsmanager.get_secret_value(SecretId=where)["SecretString"]
        except Exception as e:  # botocore raises many types; all mean "cannot load"
            code = getattr(e, "response", {}).get("Error", {}).get("Code", type(e).__name__)
            raise KeyRingError(
                f"cannot read secret '{where}' from AWS Secrets Manager ({code}); "
                "check the secret id, region and the role's secretsmanager:GetSecretValue"
            ) from None
        return KeyRing.parse(text, source)
    raise KeyRingError(f"unknown key source '{source}': use file:<path>, env:<VAR> or aws-secretsmanager:<secret-id>")


def _create_key_file(path: Path, tenants: Iterable[str | None], period: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    text = KeyRing.generate(tenants, period)
    # O_EXCL: two jobs starting together must not each write a different ring.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    logger.warning(
        "created pseudonym keys at %s; back this file up: without it new pseudonyms will not match old ones", path
    )


def configured_key_ring(
    cfg: FieldloopConfig, tenants: Iterable[str | None], env: Mapping[str, str] | None = None
) -> KeyRing:
    """The key ring from the configured source (``cfg.key_source``).

    The default local file is created on first use with a key for each of ``tenants``;
    an ``aws-secretsmanager:`` source is read in the first allowed region. ``env`` is
    what an ``env:`` source reads (entry points pass ``os.environ``).
    """
    default = cfg.refine.key_source is None
    sm = None
    if cfg.key_source.startswith("aws-secretsmanager:"):
        import boto3

        sm = boto3.client("secretsmanager", region_name=cfg.allowed_regions[0])
    return load_key_ring(
        cfg.key_source,
        create_for=list(tenants) if default else None,
        period=datetime.now(UTC).strftime("%Y%m"),
        env=env,
        secretsmanager=sm,
    )
