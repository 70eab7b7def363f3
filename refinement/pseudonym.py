"""Keyed pseudonyms without the key ever entering Spark.

A pseudonym is ``HMAC-SHA256(tenant key, "fieldloop-pseudonym/v1" | tenant | domain | raw id)``,
truncated to 128 bits, as ``p1`` + 32 hex digits. The tenant is in the message as well as
in the key, so even two tenants given the same key by mistake get different pseudonyms;
the domain (``driver``, ``vehicle``, ``device``) keeps one kind of id linkable across a
tenant's tables and unlinkable to other kinds.

Mechanism, chosen by measurement (see ``bench/refine_throughput.py``): Spark 4.2 has no
``hmac`` function; computing HMAC through ``reflect`` puts the key into the plan as a
literal, and per-row Python costs a round trip per row. Identifier columns have few
distinct values (a fleet's vehicles and drivers), so the job collects the *distinct* raw
ids of a batch to the driver, keys each once with Python's :mod:`hmac`, and joins the
small ``raw -> pseudonym`` table back with a broadcast hash join. The key stays in this
driver process: no plan, event log, executor or table ever holds it. The cost grows with
distinct ids, not rows; at a million distinct ids per batch this is about a second of
driver time and a 50 MB broadcast.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from refinement.keys import PseudonymKey

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

logger = logging.getLogger(__name__)

CONTEXT = b"fieldloop-pseudonym/v1"
PREFIX = "p1"
KEY_ID_COLUMN = "_key_id"


def pseudonym(key: PseudonymKey, domain: str, raw: str) -> str:
    """The pseudonym of ``raw`` in ``domain`` under ``key`` (whose tenant is part of the message)."""
    message = b"\x1f".join((CONTEXT, key.tenant.encode(), domain.encode(), raw.encode("utf-8")))
    return PREFIX + hmac.new(key.secret, message, hashlib.sha256).hexdigest()[:32]


def pseudonymize(df: DataFrame, fields: Mapping[str, str], key: PseudonymKey,
                 values: Mapping[str, Iterable[str]] | None = None) -> DataFrame:
    """Replace each column in ``fields`` (column -> domain) by its pseudonym; add ``_key_id``.

    Nulls stay null. Each column's distinct values are keyed once on the driver and joined
    back by a broadcast join on the raw value, so the result has the same rows in any order.
    ``values`` gives each column's distinct raw values (as strings) when the caller has
    gathered them already; a superset is fine. By default one pass over ``df`` collects them.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    spark = df.sparkSession
    columns = list(fields)
    if values is None:
        # One pass collects the distinct raw values of every column (tagged by column index).
        tagged = F.explode(F.array(*[F.struct(F.lit(i).alias("i"), F.col(c).cast("string").alias("v"))
                                     for i, c in enumerate(columns)]))
        found = df.select(tagged.alias("t")).select("t.i", "t.v").where("v IS NOT NULL").distinct().collect()
        values = {c: [r["v"] for r in found if r["i"] == i] for i, c in enumerate(columns)}
    schema = StructType([StructField("_raw", StringType(), False), StructField("_pseudonym", StringType(), False)])
    out = df
    for column in columns:
        raw_values = [v for v in values[column] if v is not None]
        mapping = spark.createDataFrame([(raw, pseudonym(key, fields[column], raw)) for raw in raw_values], schema)
        logger.debug("keyed %d distinct values of %s", len(raw_values), column)
        out = (
            out.join(F.broadcast(mapping), out[column] == mapping["_raw"], "left")
            .drop(column, "_raw").withColumnRenamed("_pseudonym", column)
        )
    return out.withColumn(KEY_ID_COLUMN, F.lit(key.id))
