"""The production path: the repository's files mirrored to an S3 bucket (served by a CDN).

:func:`mirror` uploads every file of the local repository that the bucket lacks or holds
in another version (by MD5, S3's ETag of a single-part upload), in the order that keeps
what the bucket serves consistent at every moment: target files first, then root
versions (oldest first), then the targets roles, the snapshot, and ``timestamp.json``
last, so a device never meets a timestamp naming a snapshot, or a role naming a target,
that is not there yet. The bucket's region is checked with the residency guard before
the first byte is uploaded.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from actuation.errors import ReleaseError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mirrored:
    uri: str
    uploaded: list[str]  # keys, in upload order
    unchanged: int


def _order(path: Path) -> tuple[int, int, str]:
    """Upload rank: targets, roots by version, targets roles, snapshots, timestamp."""
    if path.parts[0] == "targets":
        return (0, 0, str(path))
    name = path.name
    if name == "timestamp.json":
        return (4, 0, name)
    version, _, role = name.partition(".")
    rank = 1 if role == "root.json" else 3 if role == "snapshot.json" else 2
    return (rank, int(version) if version.isdigit() else 0, name)


def files_in_order(repo_dir: Path) -> list[Path]:
    """The repository's served files, relative to ``repo_dir``, in upload order."""
    found = [
        p.relative_to(repo_dir)
        for sub in ("targets", "metadata")
        for p in (repo_dir / sub).rglob("*")
        if p.is_file() and not p.name.startswith(".")
    ]
    return sorted(found, key=_order)


def mirror(repo_dir: Path, uri: str, client: Any, check_location: Callable[[str], Any] | None = None) -> Mirrored:
    """Upload what the bucket at ``uri`` (``s3://bucket/prefix``) lacks, in a consistent order.

    Raises:
        ResidencyError: the bucket is outside the allowed regions (nothing uploaded).
        ReleaseError: S3 refused an upload (what was uploaded before it stays consistent).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ReleaseError(f"{uri}: the release mirror is an s3://bucket/prefix URI")
    if check_location is not None:
        check_location(uri)
    bucket, prefix = parsed.netloc, parsed.path.strip("/")
    remote = _remote_etags(client, bucket, prefix)
    uploaded, unchanged = [], 0
    for rel in files_in_order(repo_dir):
        key = f"{prefix}/{rel.as_posix()}" if prefix else rel.as_posix()
        data = (repo_dir / rel).read_bytes()
        if remote.get(key) == hashlib.md5(data, usedforsecurity=False).hexdigest():
            unchanged += 1
            continue
        content_type = "application/json" if rel.suffix == ".json" else "application/octet-stream"
        extra = {"CacheControl": "no-cache"} if rel.name == "timestamp.json" else {}
        try:
            client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type, **extra)
        except (ClientError, BotoCoreError) as e:
            raise ReleaseError(
                f"uploading {key} to s3://{bucket} failed ({e}); run the command again to finish the mirror "
                "(what was uploaded is consistent: the timestamp goes last)"
            ) from e
        uploaded.append(key)
    logger.info("mirrored %d files to %s (%d unchanged)", len(uploaded), uri, unchanged)
    return Mirrored(uri, uploaded, unchanged)


def _remote_etags(client: Any, bucket: str, prefix: str) -> dict[str, str]:
    from botocore.exceptions import BotoCoreError, ClientError

    etags = {}
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                etags[item["Key"]] = item["ETag"].strip('"')
    except (ClientError, BotoCoreError) as e:
        raise ReleaseError(f"cannot list s3://{bucket}/{prefix} ({e}); check the bucket and these credentials") from e
    return etags
