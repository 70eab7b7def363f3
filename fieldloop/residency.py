"""The residency guard: every storage location is checked before its first byte is written.

* ``s3://`` and ``s3a://`` locations: the bucket's region is asked of S3
  (``GetBucketLocation``); a bucket that does not exist, or whose region cannot be read,
  is refused, since an unverifiable location is not known to be in Japan.
* local paths and ``file://`` URIs: the site declares its region in config
  (``site_region``); the path is accepted when that region is allowed.
* any other scheme is refused: we cannot tell where it is.

A location that holds a stream's data is checked against the intersection of the
deployment's allowed regions and those of every contract whose data it holds: the Kansai
robot contract allows only ``ap-northeast-3``, so its tables may not go to a lake declared
``ap-northeast-1`` even though the deployment allows both.

A refusal names the location, the region it resolved to and, when a contract narrowed the
allowed set, the contract. Regions are cached per bucket for the life of the guard (a
bucket's region never changes).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlparse

from fieldloop.errors import ResidencyError

logger = logging.getLogger(__name__)

# AWS region names: ap-northeast-1, us-gov-west-1, us-iso-east-1, us-isob-east-1.
_REGION_NAME = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$")
# GetBucketLocation answers null for us-east-1 and 'EU' for the oldest eu-west-1 buckets.
_LEGACY_LOCATIONS = {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}


def is_region_name(text: str) -> bool:
    """Whether ``text`` is shaped like an AWS region name (the one check config and contracts share)."""
    return bool(_REGION_NAME.match(text))


class Regional(Protocol):
    """What the guard needs of a data contract: its id and the regions it allows."""

    @property
    def id(self) -> str: ...
    @property
    def allowed_regions(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class Residency:
    """Where a location resolved to, and how we know."""

    location: str
    region: str
    basis: str  # "bucket-location" or "site-declaration"


class ResidencyGuard:
    """Decides whether a storage location lies in an allowed region.

    Args:
        allowed_regions: regions data may be stored in.
        site_region: the region declared for this site's local disks.
        s3_client_factory: builds a boto3 S3 client; called once, on the first S3 location.
    """

    def __init__(
        self,
        allowed_regions: Iterable[str],
        site_region: str,
        s3_client_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.allowed_regions = tuple(allowed_regions)
        self.site_region = site_region
        self._s3_client_factory = s3_client_factory
        self._s3: Any = None
        self._bucket_regions: dict[str, str] = {}

    @classmethod
    def from_config(cls, cfg: Any) -> ResidencyGuard:
        """A guard for a :class:`~fieldloop.config.FieldloopConfig`."""
        endpoint = cfg.s3.endpoint_url

        def client() -> Any:
            import boto3

            return boto3.client("s3", endpoint_url=endpoint)

        return cls(cfg.allowed_regions, cfg.site_region, client)

    def resolve(self, location: str) -> Residency:
        """Find the region of ``location`` without judging it.

        Raises:
            ResidencyError: the region cannot be determined.
        """
        parsed = urlparse(location)
        scheme = parsed.scheme.lower()
        if scheme in ("s3", "s3a"):
            if not parsed.netloc:
                raise ResidencyError(f"{location}: no bucket in the URI; write s3a://<bucket>/<prefix>")
            return Residency(location, self._bucket_region(parsed.netloc, location), "bucket-location")
        if scheme in ("", "file") or (len(scheme) == 1 and location[1:3] == ":\\"):
            return Residency(location, self.site_region, "site-declaration")
        raise ResidencyError(
            f"{location}: cannot verify the region of a '{scheme}://' location; "
            "use a local path or an s3a:// bucket in an allowed region"
        )

    def allowed_for(self, contracts: Iterable[Regional] = ()) -> tuple[str, ...]:
        """The regions data of all ``contracts`` may be stored in: the deployment's, narrowed by each."""
        allowed = list(self.allowed_regions)
        for contract in contracts:
            allowed = [r for r in allowed if r in contract.allowed_regions]
        return tuple(allowed)

    def check(self, location: str, contracts: Iterable[Regional] = ()) -> Residency:
        """Accept ``location`` for data of ``contracts`` (none: the deployment's rule alone) or raise.

        Call before writing anything there.

        Raises:
            ResidencyError: the location is outside the allowed regions or unverifiable.
        """
        contracts = list(contracts)
        residency = self.resolve(location)
        allowed = self.allowed_for(contracts)
        if residency.region not in allowed:
            how = "bucket is in" if residency.basis == "bucket-location" else "this site declares its region as"
            narrowing = [c for c in contracts if residency.region not in c.allowed_regions]
            if residency.region in self.allowed_regions and narrowing:
                whose = ", ".join(f"contract {c.id} allows only {', '.join(c.allowed_regions)}" for c in narrowing)
                raise ResidencyError(
                    f"refused {location}: {how} {residency.region}, but {whose}; nothing was written there. "
                    f"Give that data a location in {', '.join(allowed) or 'a region every contract allows'}"
                )
            what_to_do = (
                "move the data to a bucket in an allowed region"
                if residency.basis == "bucket-location"
                else "set FIELDLOOP_SITE_REGION only if this site really is in an allowed region"
            )
            raise ResidencyError(
                f"refused {location}: {how} {residency.region}, outside the allowed regions "
                f"({', '.join(self.allowed_regions)}); {what_to_do}"
            )
        logger.debug("residency ok: %s is in %s (%s)", location, residency.region, residency.basis)
        return residency

    def _bucket_region(self, bucket: str, location: str) -> str:
        if bucket in self._bucket_regions:
            return self._bucket_regions[bucket]
        if self._s3_client_factory is None:
            raise ResidencyError(f"{location}: no S3 client configured to ask the bucket's region")
        from botocore.exceptions import BotoCoreError, ClientError

        if self._s3 is None:
            self._s3 = self._s3_client_factory()
        try:
            answer = self._s3.get_bucket_location(Bucket=bucket)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code == "NoSuchBucket":
                raise ResidencyError(
                    f"{location}: bucket '{bucket}' does not exist; create it in one of "
                    f"{', '.join(self.allowed_regions)} first"
                ) from e
            raise ResidencyError(
                f"{location}: cannot read the region of bucket '{bucket}' ({code or e}); "
                "grant s3:GetBucketLocation to these credentials"
            ) from e
        except BotoCoreError as e:
            raise ResidencyError(f"{location}: cannot reach S3 to ask the bucket's region ({e})") from e
        constraint = answer.get("LocationConstraint")
        region = _LEGACY_LOCATIONS.get(constraint, constraint)
        self._bucket_regions[bucket] = region
        return region
