"""Keyed pseudonyms without the key ever entering Spark.

A pseudonym is ``HMAC-SHA256(tenant key, "fieldloop-pseudonym/v1" | tenant | domain | raw id)``,
truncated to 128 bits, as ``p1`` + 32 hex digits. The tenant is in the message as well as
in the key, so even two tenants given the same key by mistake get different pseudonyms;
the domain (``driver``, ``vehicle``, ``device``) keeps one kind of id linkable across a
tenant's tables and unlinkable to other kinds.

Mechanism, chosen by measurement (see ``bench/refine_throughput.py``): Spark 4.2 has no
``hmac`` function; computing HMAC through ``reflect`` puts the key into the plan as a
literal, and per-row Python costs a round trip per row. Identifier columns have few
distinct values (a fleet's vehicles and drivers), so the job collects the *distinct*
combinations of a batch's raw ids to the driver, keys each value once with Python's
:mod:`hmac`, and joins the small ``raws -> pseudonyms`` table back with one broadcast
hash join. The key stays in this driver process: no plan, event log, executor or table
ever holds it. The cost grows with distinct combinations, not rows: each is one row of
the broadcast table, with its raw values and their pseudonyms.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from fieldloop.keys import PseudonymKey

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


def pseudonymize(
    df: DataFrame, fields: Mapping[str, str], key: PseudonymKey, values: Iterable[Sequence[str | None]] | None = None
) -> DataFrame:
    """Replace each column in ``fields`` (column -> domain) by its pseudonym; add ``_key_id``.

    Nulls stay null. The distinct *combinations* of the columns' raw values are keyed on
    the driver (each value once) and joined back in one broadcast join on all of them, so
    the result has the same rows in any order. One join, not one per column: each row is
    looked up once, not once per identifier column. Combinations stay few where
    each column's values do (a vehicle has one VIN and a handful of drivers).

    ``values`` gives the distinct combinations (tuples of raw values as strings, in
    ``fields`` order) when the caller has gathered them already; a superset is fine, a
    subset is not (a row whose combination is missing would get null pseudonyms). By
    default one pass over ``df`` collects them.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    spark = df.sparkSession
    columns = list(fields)
    if values is None:
        values = [tuple(r) for r in df.select(*[F.col(c).cast("string") for c in columns]).distinct().collect()]
    combos = {tuple(v) for v in values}
    # Each (column, value) keyed once, however many combinations hold it; None stays None.
    values_at = {(i, raw) for combo in combos for i, raw in enumerate(combo) if raw is not None}
    keyed = {(i, raw): pseudonym(key, fields[columns[i]], raw) for i, raw in values_at}
    raws, pseudonyms = [f"_raw_{i}" for i in range(len(columns))], [f"_pseudonym_{i}" for i in range(len(columns))]
    schema = StructType([StructField(n, StringType()) for n in (*raws, *pseudonyms)])
    mapping = spark.createDataFrame(
        [(*combo, *[keyed.get((i, raw)) for i, raw in enumerate(combo)]) for combo in combos], schema
    )
    logger.debug("keyed %d distinct values in %d combinations of %s", len(keyed), len(combos), ", ".join(columns))
    on = [F.col(c).cast("string").eqNullSafe(mapping[r]) for c, r in zip(columns, raws, strict=True)]
    out = df.join(F.broadcast(mapping), on, "left").drop(*columns, *raws)
    for c, p in zip(columns, pseudonyms, strict=True):
        out = out.withColumnRenamed(p, c)
    return out.withColumn(KEY_ID_COLUMN, F.lit(key.id))
