"""The privacy report: what one refinement run did to one output table.

Written as JSON next to the table (``<table>/_privacy/report-v<bronze version>.json``;
Delta ignores ``_``-prefixed folders) and printed by ``fieldloop refine``. Its counts
reconcile: rows in = rows out + quarantined + trimmed + suppressed + expired (rows already
past their contract's retention when refined: counted, never written). Apart from the rows
in, it says how many rows of earlier runs the same run's retention step deleted from the
table, before it wrote: no count of a report is of rows a later step of its run removed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


@dataclass
class PrivacyReport:
    """One run's account of one output table."""

    table: str
    path: str
    contract: str
    level: str
    policy_version: int
    bronze_versions: tuple[int, int] | None  # (first, last) bronze commit read; None: nothing new
    rows_in: int = 0
    rows_out: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)  # quality rule -> rows
    trimmed_rows: int = 0
    suppressed_rows: int = 0
    expired_rows: int = 0  # rows in already past the contract's retention: not written
    retention_deleted: int = 0  # rows of earlier runs this run's retention step deleted from the table
    suppressed_values: dict[str, int] = field(default_factory=dict)  # quasi-identifier -> values nulled
    k_required: int | None = None
    k_achieved: int | None = None
    l_diversity: dict[str, int | None] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)  # field -> action
    key_ids: list[str] = field(default_factory=list)
    placeholders: dict[str, int] = field(default_factory=dict)  # free-text placeholder -> count
    residency_region: str = ""
    delta_version: int | None = None
    dp: dict[str, Any] = field(default_factory=dict)

    @property
    def reconciles(self) -> bool:
        return self.rows_in == (
            self.rows_out
            + sum(self.quarantined.values())
            + self.trimmed_rows
            + self.suppressed_rows
            + self.expired_rows
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reconciles"] = self.reconciles
        return data

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, ensure_ascii=False, default=str)

    @property
    def location(self) -> str:
        last = self.bronze_versions[1] if self.bronze_versions else 0
        return f"{self.path.rstrip('/')}/_privacy/report-v{last:08d}.json"


def write_report(spark: SparkSession, report: PrivacyReport) -> str:
    """Write the report next to its table through Hadoop's file system (local or s3a); returns its URI."""
    jvm = spark._jvm
    path = jvm.org.apache.hadoop.fs.Path(report.location)
    fs = path.getFileSystem(spark._jsc.hadoopConfiguration())
    out = fs.create(path, True)
    try:
        out.write(bytearray(report.to_json().encode("utf-8")))
    finally:
        out.close()
    return report.location
