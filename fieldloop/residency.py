"""The residency guard: every storage location is checked before its first byte is written.

* ``s3://`` and ``s3a://`` locations: the bucket's region is asked of S3
  (``GetBucketLocation``); a bucket that does not exist, or whose region cannot be read,
  is refused, since an unverifiable location is not known to be in Japan.
* local paths and ``file://`` URIs: the site declares its region in config
  (``site_region``); the path is accepted when that region is allowed.
* any other scheme is refused: we cannot tell where it is.

A refusal names the location and the region it resolved to. Regions are cached per
bucket for the life of the guard (a bucket's region never changes).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
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

    def check(self, location: str) -> Residency:
        """Accept ``location`` or raise; call before writing anything there.

        Raises:
            ResidencyError: the location is outside the allowed regions or unverifiable.
        """
        residency = self.resolve(location)
        if residency.region not in self.allowed_regions:
            how = "bucket is in" if residency.basis == "bucket-location" else "this site declares its region as"
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
