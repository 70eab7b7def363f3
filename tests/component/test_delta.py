"""Delta Lake through delta-spark, and interop with the `deltalake` package both ways."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from fieldloop.classes import DataClass
from fieldloop.config import FieldloopConfig
from fieldloop.lineage import TableGovernance
from fieldloop.spark import session_conf

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

GOV = TableGovernance(DataClass.PUBLIC, "vehicle-frames-public", "ap-northeast-1", appi_level="pseudonymized")


def test_factory_configures_delta_jars_and_loopback(cfg: FieldloopConfig) -> None:
    conf = session_conf(cfg)
    assert conf["spark.driver.bindAddress"] == "127.0.0.1"
    assert conf["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    jars = conf["spark.jars"].split(",")
    assert any("delta-spark_" in j for j in jars) and any("spark-sql-kafka" in j for j in jars)
    assert any("spark-avro" in j for j in jars)
    assert "spark.jars.packages" not in conf  # nothing is downloaded at run time


def test_spark_writes_delta_and_deltalake_reads_it(spark: SparkSession, tmp_path: Path) -> None:
    path = str(tmp_path / "bronze" / "frames")
    rows = [(f"dev-{i}", i, float(i) * 1.5) for i in range(100)]
    df = spark.createDataFrame(rows, "device_id STRING, seq LONG, speed DOUBLE")
    (df.write.format("delta").mode("overwrite").option("delta.enableChangeDataFeed", "true").save(path))
    props = ", ".join(f"'{k}' = '{v}'" for k, v in GOV.to_delta_properties().items())
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ({props})")
    df.limit(10).write.format("delta").mode("append").save(path)

    assert spark.read.format("delta").load(path).count() == 110
    table = DeltaTable(path)
    assert table.version() == 2
    assert table.to_pyarrow_table().num_rows == 110
    assert TableGovernance.from_delta_properties(table.metadata().configuration) == GOV
    # time travel agrees between the two readers
    assert DeltaTable(path, version=0).to_pyarrow_table().num_rows == 100
    assert spark.read.format("delta").option("versionAsOf", 0).load(path).count() == 100


def test_deltalake_writes_and_spark_reads_it(spark: SparkSession, tmp_path: Path) -> None:
    path = str(tmp_path / "gold" / "windows")
    data = pa.table({"device_id": ["a", "b", "c"], "value": [1.0, 2.5, None]})
    write_deltalake(path, data)
    # deltalake 1.6 refuses non-`delta.*` keys in write_deltalake(configuration=...);
    # custom properties go in through ALTER (raise_if_not_exists=False).
    DeltaTable(path).alter.set_table_properties(GOV.to_delta_properties(), raise_if_not_exists=False)
    write_deltalake(path, pa.table({"device_id": ["d"], "value": [4.0]}), mode="append")

    df = spark.read.format("delta").load(path)
    assert sorted(r.device_id for r in df.collect()) == ["a", "b", "c", "d"]
    assert df.where("value IS NULL").count() == 1
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").collect()[0]
    assert TableGovernance.from_delta_properties(detail.properties) == GOV
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").collect()
    assert len(history) == 3  # create, set properties, append
