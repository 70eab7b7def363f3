"""Quality expectations: each row gets the name of the first rule it fails, or null.

Rules come from the stream's policy file (``[[expect]]``): ``required`` (not null),
``range`` and ``range_by`` (value ranges, per unit for plant sensors), ``in_set``,
``monotonic`` (time never goes back per device, in sequence order) and
``unit_consistent`` (a sensor reports in one unit: rows in a unit other than the
sensor's most common one in the run fail). Failing rows go to quarantine with the rule
name; :func:`gate` fails the run when too many fail. ``range`` rules on columns silver
keeps as they are also become Delta CHECK constraints, so no later writer can break them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from refinement.errors import QualityError
from refinement.policy import Expectation

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

RULE_COLUMN = "_rule"
WINDOW_RULES = ("monotonic", "unit_consistent")  # compare a row with others: need a shuffle


def _failure(e: Expectation, device: str, order: str) -> Column:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if e.rule == "required":
        return (
            F.greatest(*[F.col(c).isNull() for c in e.columns]) if len(e.columns) > 1 else F.col(e.columns[0]).isNull()
        )
    col = F.col(e.column)  # type: ignore[arg-type]
    if e.rule == "range":
        bad = F.lit(False)
        if e.min is not None:
            bad = bad | (col < e.min)
        if e.max is not None:
            bad = bad | (col > e.max)
        return bad
    if e.rule == "range_by":
        by = F.col(e.by)  # type: ignore[arg-type]
        bad = F.lit(True)  # a unit with no declared range fails too: nobody knows what is plausible for it
        for key, (lo, hi) in e.ranges.items():
            bad = F.when(by == key, (col < lo) | (col > hi)).otherwise(bad)
        return bad
    if e.rule == "in_set":
        return ~col.isin(*e.values)
    if e.rule == "monotonic":
        # Null on a device's first row, so no failure there; lag appears once, so the
        # window computes it once.
        return col < F.lag(col).over(Window.partitionBy(device).orderBy(order))
    if e.rule == "unit_consistent":
        per_unit = F.count(F.lit(1)).over(Window.partitionBy(e.per, e.column))  # type: ignore[arg-type]
        return per_unit < F.max(per_unit).over(Window.partitionBy(e.per))  # type: ignore[arg-type]
    raise AssertionError(e.rule)


def _first_failed(expectations: Sequence[Expectation], failure: Callable[[int], Column]) -> Column:
    """The name of the first expectation (in file order) whose ``failure(index)`` is true, or null.

    A null failure is no failure here: missing values are the ``required`` rule's to catch.
    """
    from pyspark.sql import functions as F

    rule = F.lit(None).cast("string")
    for i in reversed(range(len(expectations))):  # built back to front so the first one wins
        rule = F.when(F.coalesce(failure(i), F.lit(False)), F.lit(expectations[i].name)).otherwise(rule)
    return rule


def mark(
    df: DataFrame, expectations: Sequence[Expectation], device: str = "_device_id", order: str = "_seq"
) -> DataFrame:
    """``df`` with ``_rule``: the name of the first expectation each row fails, or null."""
    return df.withColumn(RULE_COLUMN, _first_failed(expectations, lambda i: _failure(expectations[i], device, order)))


def rules_by_key(
    df: DataFrame,
    expectations: Sequence[Expectation],
    keys: Sequence[str],
    device: str = "_device_id",
    order: str = "_seq",
    carry: Sequence[str] = (),
) -> DataFrame:
    """``keys``, the ``carry`` columns and ``_rule`` (as :func:`mark`) of every row of ``df``, and nothing else.

    What a job needs to gate a run and split its rows, without carrying whole rows through
    a shuffle: row-local rules are decided before it, so only the keys, their verdicts and
    the columns the window rules (``monotonic``, ``unit_consistent``) read are shuffled.
    The rows themselves are found again by joining on ``keys``, which must be unique.
    """
    from pyspark.sql import functions as F

    windowed = [e for e in expectations if e.rule in WINDOW_RULES]
    carried = {*keys, *carry, *(c for e in windowed for c in e.used_columns)} | ({device, order} if windowed else set())
    local = [i for i, e in enumerate(expectations) if e.rule not in WINDOW_RULES]
    # One small int crosses the shuffle for all row-local rules: the index of the first one
    # failing. Local rule i is the first failing rule overall unless a window rule before it fails.
    first_local = F.lit(None).cast("int")
    for i in reversed(local):
        first_local = F.when(F.coalesce(_failure(expectations[i], device, order), F.lit(False)), F.lit(i)).otherwise(
            first_local
        )
    narrow = df.select(*[F.col(c) for c in sorted(carried)], first_local.alias("_first_local"))
    rule = _first_failed(
        expectations, lambda i: F.col("_first_local") == i if i in local else _failure(expectations[i], device, order)
    )
    return narrow.select(*keys, *carry, rule.alias(RULE_COLUMN))


def gate(rows_in: int, failed: Mapping[str, int], max_rate: float, table: str) -> None:
    """Raise when the share of failing rows passes ``max_rate``.

    Raises:
        QualityError: naming the rules that failed most and what to do.
    """
    total = sum(failed.values())
    if rows_in and total / rows_in > max_rate:
        worst = ", ".join(f"{name}: {n}" for name, n in sorted(failed.items(), key=lambda kv: -kv[1])[:5])
        raise QualityError(
            f"{table}: {total} of {rows_in} rows ({total / rows_in:.1%}) fail quality rules, over the "
            f"{max_rate:.1%} limit ({worst}); nothing was written. Look at the devices sending them, or raise "
            "FIELDLOOP_REFINE_MAX_FAILURE_RATE if the data is right and the rule is wrong"
        )


def check_constraints(expectations: Sequence[Expectation], kept: Sequence[str]) -> dict[str, str]:
    """Delta CHECK constraints for the ``range`` rules on columns silver keeps unchanged."""
    out = {}
    for e in expectations:
        if e.rule == "range" and e.column in kept:
            parts = ([f"{e.column} >= {e.min}"] if e.min is not None else []) + (
                [f"{e.column} <= {e.max}"] if e.max is not None else []
            )
            out[e.name.replace("-", "_")] = f"{e.column} IS NULL OR ({' AND '.join(parts)})"
    return out
