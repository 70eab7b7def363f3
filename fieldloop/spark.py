"""The Spark session factory every job uses.

Defaults run on one machine: ``local[*]``, driver bound to 127.0.0.1, Delta's SQL
extension and catalog, and the connector jars ``infra/pom.xml`` resolved (Delta,
Kafka, Avro; hadoop-aws too when the lake is on ``s3a://``) given by ``spark.jars``,
so nothing is fetched at run time. The master and any extra conf come from config, so
the same job code runs when submitted to a cluster.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from fieldloop import jvm
from fieldloop.config import FieldloopConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def session_conf(
    cfg: FieldloopConfig, app_name: str = "fieldloop", extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The Spark conf a fieldloop session is built with (no JVM is started).

    Raises:
        JvmDependencyError: the connector jars were never resolved.
    """
    jars = jvm.jars(cfg.jars_dir, "spark")
    if cfg.lake.startswith(("s3a://", "s3://")):
        jars += jvm.jars(cfg.jars_dir, "s3")
    scratch = cfg.home / "spark"
    conf = {
        "spark.app.name": app_name,
        "spark.master": cfg.spark.master,
        "spark.jars": ",".join(str(j) for j in jars),
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.driver.memory": cfg.spark.driver_memory,
        "spark.ui.enabled": str(cfg.spark.ui).lower(),
        "spark.sql.shuffle.partitions": str(cfg.spark.shuffle_partitions),
        # Delta rebuilds table state with 50 tasks by default: seconds of overhead per read locally.
        "spark.databricks.delta.snapshotPartitions": str(cfg.spark.shuffle_partitions),
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.warehouse.dir": str(scratch / "warehouse"),
        "spark.local.dir": str(scratch / "tmp"),
        # Python workers must use this interpreter, or they miss the venv's packages.
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.sql.session.timeZone": "UTC",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
    }
    if cfg.spark.ui:
        conf["spark.ui.host"] = "127.0.0.1"
    if cfg.s3.endpoint_url:
        conf["spark.hadoop.fs.s3a.endpoint"] = cfg.s3.endpoint_url
        conf["spark.hadoop.fs.s3a.path.style.access"] = "true"
    conf.update(cfg.spark.conf)
    conf.update(extra or {})
    return conf


def spark_session(
    cfg: FieldloopConfig, app_name: str = "fieldloop", extra: dict[str, str] | None = None
) -> SparkSession:
    """Build (or return the running) SparkSession for ``cfg``.

    Args:
        cfg: the effective config; ``cfg.spark`` decides master and extra conf.
        app_name: shown in the Spark UI and logs.
        extra: conf for this job only, applied last.
    """
    from pyspark.sql import SparkSession

    # The JVM reads this at launch; without it Spark binds its services to the first
    # non-loopback interface it finds, whatever spark.driver.bindAddress says.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # PySpark picks the worker interpreter from this variable, not from spark.pyspark.python;
    # without it workers run the system python3 and miss the venv's packages.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder: Any = SparkSession.builder
    for key, value in session_conf(cfg, app_name, extra).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def create_table(spark: SparkSession, path: str, schema: Any, properties: dict[str, str]) -> None:
    """Create the Delta table at ``path`` with ``schema`` and table ``properties`` unless it exists."""
    from delta.tables import DeltaTable

    builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(schema)
    for key, value in properties.items():
        builder = builder.property(key, value)
    builder.execute()


def create_table_as(
    spark: SparkSession, df: Any, path: str, properties: dict[str, str], user_metadata: str, replace: bool = False
) -> None:
    """Create the Delta table at ``path`` from ``df``, with table ``properties``, in one commit.

    Creating the table first and writing into it after would cost a commit and a snapshot
    of the empty table. CHECK constraints among ``properties``
    are enforced on ``df``'s rows. ``user_metadata`` goes in the commit like the
    ``userMetadata`` write option, which this path does not read. ``replace`` creates the
    table even where something is in the way: a table, or the files a failed first write
    left with no commit (which make ``path`` look taken to Spark).

    Raises:
        AnalysisException: something is at ``path`` already (unless ``replace``).
    """
    conf = "spark.databricks.delta.commitInfo.userMetadata"
    builder = df.writeTo(f"delta.`{path}`").using("delta")
    for key, value in properties.items():
        builder = builder.tableProperty(key, value)
    spark.conf.set(conf, user_metadata)
    try:
        builder.createOrReplace() if replace else builder.create()
    finally:
        spark.conf.unset(conf)
